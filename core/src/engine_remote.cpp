// Many hosts (--backend): mailboxes/ and sem/ shared through a Backend (Redis).
//
// Each daemon keeps a mirror of every shared mailbox (same id, so the same inode numbers and
// by-id/ names on every host) and of every shared semaphore; the backend keeps the truth:
// names, settings, queued messages, semaphore values. The engine's semantics stay where they
// are: open files, partial reads, batches, blocking, EINTR, poll.
//
// The data path: a send or receive parks as a waiter of the mirror, as on one host, and the
// mailbox is then served -- pushes, claims, give-backs -- by one thread at a time: the thread
// that parked it, once it has let go of the engine lock (no hand-over to another thread per
// message), the backend's event thread for an event about it, or the worker thread (ticks,
// and everything while the backend is failing, so that no FUSE thread sits out a timeout).
// Nothing waits as a blocked thread, so thousands of waiters cost nothing more:
//   - a parked send is pushed; no room -> it stays parked (blocking) until a "room" event,
//     or fails EAGAIN;
//   - a receive with nothing here parks, and as many messages are claimed as there are
//     receivers waiting, handed out through the ordinary dispatch; what nobody here took goes
//     back (see giveBackLeftovers); an O_NONBLOCK receive is answered EAGAIN once a claim
//     found nothing;
//   - a message read to the end is acknowledged when its reader confirms (its next read or
//     close), exactly as durable mode confirms: a reader that dies first gets it again; a
//     reader taking message after message claims its next one in the same round trip;
//   - every lease of a message held here is renewed each tick (a third of the lease), and a
//     tick retries every parked operation, so a lost event costs at most one tick;
//   - events from other daemons (through the backend) wake the mirrors concerned.
// Namespace calls (mkdir, rmdir, rename, settings, listings) are few: they call the backend
// from the FUSE thread, never with the engine lock held.
//
// Lock order: whoever serves holds mutex_ except around backend calls; it re-checks
// everything it found before a call after it (the mailbox may be gone, the waiter cancelled).
#include <fcntl.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <set>
#include <utility>

#include <fmt/format.h>

#include "clock.hpp"
#include "decimal.hpp"
#include "ipcfs/backend.hpp"
#include "ipcfs/engine.hpp"
#include "ipcfs/inode.hpp"
#include "names.hpp"
#include "objects.hpp"

namespace ipcfs {

using detail::Handle;
using detail::HandleKind;
using detail::Mailbox;
using detail::Message;
using detail::MessageState;
using detail::Semaphore;
using detail::WaitKind;
using detail::Waiter;

namespace {

// Local inboxes (procs/) take ids above every id the backend gives, so the two never meet
// (and stay below 2^34: procs/P/from/Q packs an inbox id with a pid into 56 bits).
constexpr uint64_t kLocalIdBase = uint64_t{1} << 33;
// A receiving batch node may take many messages per read: claim up to this many for it.
constexpr size_t kBatchClaim = 1024;
constexpr size_t kMaxClaim = 1024;
// A batch write's messages go to the backend this many per round trip.
constexpr size_t kPushBatch = 1024;
// A listing of a shared mailbox shows the first this many queued messages.
constexpr size_t kListingMax = 10000;

timespec fromNs(int64_t ns) {
  if (ns <= 0) return now();
  return timespec{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
}

int64_t toNs(const timespec& t) { return static_cast<int64_t>(t.tv_sec) * 1000000000 + t.tv_nsec; }

detail::Policy policyFrom(std::string_view s) {
  if (s == "exclusive") return detail::Policy::Exclusive;
  if (s == "pair") return detail::Policy::Pair;
  return detail::Policy::Any;
}

int errnoOf(std::errc e) { return static_cast<int>(e); }

// A message as the backend keeps it, made a local one (without its inode number yet).
std::shared_ptr<Message> fromRemote(RemoteMessage&& rm) {
  auto msg = detail::makeMessage(std::move(rm.payload));
  msg->seq = rm.seq;
  if (!rm.name.empty() && rm.name != detail::seqName(rm.seq)) msg->setName(std::move(rm.name));
  msg->senderPid = static_cast<pid_t>(rm.pid);
  msg->uid_ = rm.uid;
  msg->gid = rm.gid;
  msg->mode = static_cast<uint16_t>(rm.mode ? rm.mode : 0444);
  msg->setTimes(fromNs(rm.sentNs));
  detail::MessageExtra& extra = msg->more();
  extra.redeliveries = extra.remoteRedeliveries = rm.redeliveries;
  extra.remoteSeq = rm.seq;
  return msg;
}

// It was given back cut short here (a reader left it half-read): one more redelivery.
bool cutShortHere(const Message& m) { return m.extra && m.redeliveries() > m.extra->remoteRedeliveries; }

// Out of every index of its mailbox: a listing entry, or a drop-in that was pushed.
void forgetLocally(Mailbox& box, detail::MessageTable& messages, const Message* m) {
  detail::eraseName(box, m);
  messages.erase(m);
}

}  // namespace

// ---- lifecycle ----

void Engine::useBackend(std::shared_ptr<Backend> backend) {
  std::lock_guard lock(mutex_);
  backend_ = std::move(backend);
  nextMailboxId_ = std::max(nextMailboxId_, kLocalIdBase);
}

void Engine::startBackend() {
  if (!backend_) return;
  remoteWorker_ = std::thread([this] { remoteLoop(); });
  backend_->listen([this](const BackendEvent& e) { onBackendEvent(e); });
}

void Engine::stopBackend() {
  if (!backend_ || !remoteWorker_.joinable()) return;
  backend_->stop();
  {
    std::lock_guard lock(mutex_);
    remoteStopping_ = true;
  }
  remoteCv_.notify_all();
  remoteWorker_.join();
  // What this daemon holds goes back now rather than when its lease runs out: read to the
  // end -> gone; half-read -> back, counted; claimed for nobody -> back.
  std::vector<std::tuple<uint64_t, uint64_t, pid_t>> acks;
  std::vector<std::tuple<uint64_t, uint64_t, bool>> back;
  {
    std::lock_guard lock(mutex_);
    for (auto& [fh, h] : handles_) {
      if (!h->box || !h->box->remote) continue;
      for (const auto& m : h->unconfirmed)
        if (m->remoteSeq()) acks.emplace_back(h->box->id, m->remoteSeq(), m->extra->remoteReader);
      h->unconfirmed.clear();
      if (h->current && h->current->remoteSeq()) back.emplace_back(h->box->id, h->current->remoteSeq(), true);
    }
    for (auto& [id, box] : mailboxesById_)
      for (auto& m : box->queue)
        if (m->remoteSeq()) back.emplace_back(id, m->remoteSeq(), cutShortHere(*m));
    for (const auto& job : remoteJobs_)
      if (job.kind == RemoteJob::Kind::Ack) acks.emplace_back(job.id, job.seq, job.pid);
    remoteJobs_.clear();
  }
  for (auto [box, seq, reader] : acks) (void)backend_->ack(box, {{seq, static_cast<uint32_t>(reader)}}, 0);
  for (auto [box, seq, redelivered] : back) (void)backend_->giveBack(box, seq, redelivered);
}

// ---- events and jobs ----

void Engine::onBackendEvent(const BackendEvent& e) {
  After after;  // poll notifications: run once unlocked
  Lock lock(mutex_);
  switch (e.kind) {
    case BackendEvent::Kind::Message:
    case BackendEvent::Kind::Room:
      if (auto box = mailboxById(e.id); box && box->remote) {
        if (e.kind == BackendEvent::Kind::Message) {
          box->mayHaveQueued = true;
          wakePollers(*box, after);
        }
        // Served by this (the event) thread rather than handed to the worker: a thread
        // switch less between a message entering the queue and a waiting reader here.
        if (!box->receivers.empty() || !box->senders.empty()) serveRemoteHere(box, after);
      }
      break;
    case BackendEvent::Kind::Settings:
      queueRemote({RemoteJob::Kind::Settings, e.id, 0});
      break;
    case BackendEvent::Kind::Semaphore:
      if (auto it = semaphoresById_.find(e.id); it != semaphoresById_.end()) {
        if (!it->second->waiters.empty()) requestSemWake(*it->second);
        for (auto& [fh, notify] : it->second->pollers) after.push_back(std::move(notify));
        it->second->pollers.clear();
      }
      break;
    case BackendEvent::Kind::Namespace:
      queueRemote({RemoteJob::Kind::Namespace, 0, 0});
      break;
    case BackendEvent::Kind::Delivered:
      if (auto it = remoteReceipts_.find({e.id, e.seq}); it != remoteReceipts_.end()) {
        MessagePtr msg = std::move(it->second);
        remoteReceipts_.erase(it);
        settleReceipt(*msg, fmt::format("delivered {} to {}\n", e.seq, e.pid), after);
      }
      break;
    case BackendEvent::Kind::Up:
      for (auto& [id, box] : mailboxesById_) box->mayHaveQueued = true;  // events may have been missed
      queueRemote({RemoteJob::Kind::Namespace, 0, 0});
      queueRemote({RemoteJob::Kind::Tick, 0, 0});
      break;
    case BackendEvent::Kind::Down:
      queueRemote({RemoteJob::Kind::Down, 0, 0});
      break;
  }
  lock.unlock();
  run(after);
}

void Engine::queueRemote(RemoteJob job) {
  if (!backend_ || remoteStopping_) return;
  remoteJobs_.push_back(job);
  remoteCv_.notify_one();
}

void Engine::requestWake(Mailbox& box) {
  if (box.wakeQueued) return;
  box.wakeQueued = true;
  queueRemote({RemoteJob::Kind::Wake, box.id, 0});
}

void Engine::requestSemWake(Semaphore& sem) {
  if (sem.wakeQueued) return;
  sem.wakeQueued = true;
  queueRemote({RemoteJob::Kind::SemWake, sem.id, 0});
}

void Engine::remoteLoop() {
  const auto period = std::chrono::milliseconds(std::max<uint32_t>(backend_->leaseMs() / 3, 50));
  Lock lock(mutex_);
  auto nextTick = std::chrono::steady_clock::now() + period;
  while (!remoteStopping_) {
    if (remoteJobs_.empty()) remoteCv_.wait_until(lock, nextTick);
    if (remoteStopping_) break;
    if (std::chrono::steady_clock::now() >= nextTick) {
      remoteJobs_.push_back({RemoteJob::Kind::Tick, 0, 0});
      nextTick = std::chrono::steady_clock::now() + period;
    }
    if (remoteJobs_.empty()) continue;
    const RemoteJob job = remoteJobs_.front();
    remoteJobs_.pop_front();
    After after;
    runRemoteJob(job, lock, after);
    lock.unlock();
    run(after);
    lock.lock();
  }
}

void Engine::runRemoteJob(const RemoteJob& job, Lock& lock, After& after) {
  switch (job.kind) {
    case RemoteJob::Kind::Wake:
      if (auto box = mailboxById(job.id); box && box->remote) {
        box->wakeQueued = false;
        serveRemote(box, lock, after, false);
      }
      break;
    case RemoteJob::Kind::SemWake:
      remoteSemWake(job.id, lock, after);
      break;
    case RemoteJob::Kind::Ack: {
      lock.unlock();
      auto r = backend_->ack(job.id, {{job.seq, static_cast<uint32_t>(job.pid)}}, 0);
      lock.lock();
      if (r) remoteAcksLost_ += r->lost;
      break;
    }
    case RemoteJob::Kind::Unhold: {
      lock.unlock();
      (void)backend_->unhold(job.id, static_cast<uint32_t>(job.pid));
      lock.lock();
      break;
    }
    case RemoteJob::Kind::Settings: {
      lock.unlock();
      auto rm = backend_->mailbox(job.id);
      lock.lock();
      if (auto box = mailboxById(job.id); rm && box && box->remote) {
        applyRemoteSettings(*box, *rm);
        if (!box->senders.empty()) requestWake(*box);  // more room, perhaps
      }
      break;
    }
    case RemoteJob::Kind::Namespace:
      lock.unlock();
      (void)syncRemoteMailboxes();
      (void)syncRemoteSemaphores();
      lock.lock();
      break;
    case RemoteJob::Kind::Tick:
      remoteTick(lock, after);
      break;
    case RemoteJob::Kind::Down:
      failRemoteWaiters(EIO, after);
      break;
  }
}

// ---- mailboxes: the data path (whoever serves the mailbox; see the top of this file) ----

// Pushes what waits to be sent, claims for the receivers that wait, gives back what nobody
// here wants: one thread at a time per mailbox (two would claim for the same receivers, and
// could reorder one sender's messages); a thread arriving meanwhile leaves it to the one at
// it, which goes round again. `tick`: the periodic retry (claims even when no event said a
// message came, renews the rendezvous registration).
void Engine::serveRemote(const MailboxPtr& box, Lock& lock, After& after, bool tick) {
  if (box->serving) {
    box->serveAgain = true;
    box->serveAgainAsTick = box->serveAgainAsTick || tick;  // the tick's retry is not lost
    return;
  }
  box->serving = true;
  do {
    box->serveAgain = false;
    pushSenders(box, lock, after);
    claimForReceivers(box, lock, after, tick);
    giveBackLeftovers(box, lock);
    registerWaiting(box, lock, tick);
    tick = std::exchange(box->serveAgainAsTick, false);
  } while (box->serveAgain && !box->removed);
  box->serving = false;
}

// A send or receive just parked: served by the calling thread once it lets go of the lock
// (after the reply callbacks it already has), not handed to the worker -- a thread switch
// less per message. While the backend is failing, the worker does it: a FUSE thread must not
// sit out a timeout.
void Engine::serveRemoteHere(const MailboxPtr& box, After& after) {
  if (backend_->failing()) return requestWake(*box);
  after.push_back([this, box] {
    After more;
    Lock lock(mutex_);
    if (!box->removed && !remoteStopping_) serveRemote(box, lock, more, false);
    lock.unlock();
    run(more);
  });
}

// Pushes parked messages in order, a batch write's many in one round trip; stops at the
// first that finds no room (its sender keeps its place at the front, and those behind it
// wait behind it).
void Engine::pushSenders(const MailboxPtr& box, Lock& lock, After& after) {
  while (!box->senders.empty() && !box->removed) {
    Waiter w = std::move(box->senders.front());
    box->senders.pop_front();
    waiterHomes_.erase(w.id);
    --sendersWaiting_;
    const bool batch = w.kind == WaitKind::SendBatch;
    std::vector<MessagePtr> msgs;
    if (batch) {
      for (size_t i = 0; i < w.batch.size() && i < kPushBatch; ++i) msgs.push_back(w.batch[i]);
    } else {
      msgs.push_back(w.msg);
    }
    const Handle* sender = handle(w.fh);
    std::vector<RemoteMessage> rms(msgs.size());
    for (size_t i = 0; i < msgs.size(); ++i) {
      const Message& m = *msgs[i];
      RemoteMessage& rm = rms[i];
      if (m.state == MessageState::Composing && !m.namedBySeq()) rm.name = m.name();  // a drop-in's
      rm.payload = std::string(m.payload());
      rm.pid = static_cast<uint32_t>(m.senderPid);
      rm.uid = m.uid_;
      rm.gid = m.gid;
      rm.mode = m.mode;
      rm.sentNs = toNs(now());
      rm.receipt = sender && sender->readsReceipts && !batch;
    }
    lock.unlock();
    auto r = backend_->push(box->id, rms);
    lock.lock();
    auto failSender = [&](int err) {
      const bool nobodyToTell = !w.onRead && !w.onStatus && !w.onWrite;
      if (nobodyToTell) ++discarded_;
      if (batch) {
        for (const auto& m : w.batch) releaseBytes(m->size());
        if (w.batchEntered > 0) {  // a short write of what went
          after.push_back([d = std::move(w.onWrite), n = w.batchEnds[w.batchEntered - 1]] { d(n); });
          return;
        }
      } else {
        releaseBytes(w.msg->size());
        if (w.msg->state == MessageState::Composing) forgetLocally(*box, *messages_, w.msg.get());
      }
      after.push_back(detail::failWaiter(w, err));
    };
    if (!r) {
      failSender(errnoOf(r.error()));
      continue;
    }
    for (size_t i = 0; i < r->seqs.size(); ++i) {
      Message& m = *msgs[i];
      m.seq = r->seqs[i];
      releaseBytes(m.size());
      if (m.state == MessageState::Composing) forgetLocally(*box, *messages_, &m);
    }
    const size_t entered = r->seqs.size();
    if (entered > 0) {
      box->sent += entered;
      messagesSent_ += entered;
      box->mtime = box->ctime = now();
      wakePollers(*box, after);
    }
    if (batch) {
      w.batch.erase(w.batch.begin(), w.batch.begin() + static_cast<std::ptrdiff_t>(entered));
      w.batchEntered += entered;
    }
    auto keepWaiting = [&] {
      const WaiterId id = w.id;
      box->senders.push_front(std::move(w));
      waiterHomes_.emplace(id, box.get());
      ++sendersWaiting_;
    };
    if (r->refused != 0) {  // the first not entered
      if (r->refused == EAGAIN && !w.nonblock) {
        keepWaiting();
        break;
      }
      failSender(r->refused);
      continue;
    }
    if (batch) {
      if (w.batch.empty()) {
        if (Handle* h = handle(w.fh)) h->draft = std::move(w.leftover);
        after.push_back([d = std::move(w.onWrite), n = w.batchTotal] { d(n); });
      } else {
        keepWaiting();  // more than one round trip's worth: the loop takes it again
      }
      continue;
    }
    Handle* h = handle(w.fh);
    if (!h) {  // released meanwhile (a send from release): nobody waits for it
      if (w.onStatus) after.push_back([d = std::move(w.onStatus)] { d(Status{}); });
      continue;
    }
    // Its receipt comes from whichever host's reader acknowledges it.
    if (h->readsReceipts) remoteReceipts_.insert_or_assign({box->id, w.msg->seq}, w.msg);
    (void)sent(*h, w.msg, w.onStatus, w.onRead, w.size, after, w.id);
  }
}

// Claims what the receivers parked here can take, hands it out, and answers the
// non-blocking ones that found nothing.
void Engine::claimForReceivers(const MailboxPtr& box, Lock& lock, After& after, bool evenIfEmpty) {
  if (box->removed || box->receivers.empty()) return;
  size_t want = 0;
  std::vector<WaiterId> probes;
  for (const Waiter& w : box->receivers) {
    const Handle* h = handle(w.fh);
    // A batch read takes as many whole messages as fit its buffer (at least 2 bytes each);
    // what it leaves stays claimed here for its next read (see giveBackLeftovers).
    want += h && h->batch != detail::Batch::None ? std::clamp<size_t>(w.size / 2, 1, kBatchClaim) : 1;
    if (w.nonblock) probes.push_back(w.id);
  }
  const size_t here = box->queue.size();
  // Blocking receivers alone need not ask while the shared queue is known to be empty (the
  // last claim emptied it and no "message" event came since); a non-blocking one always
  // asks: its answer must not depend on an event still on its way.
  if (want > here && (box->mayHaveQueued || !probes.empty() || evenIfEmpty)) {
    const size_t asked = std::min(want - here, kMaxClaim);
    box->mayHaveQueued = false;  // an event from now on sets it again
    lock.unlock();
    auto claimed = backend_->claim(box->id, asked);
    lock.lock();
    if (claimed && claimed->size() == asked) box->mayHaveQueued = true;  // perhaps more
    if (!claimed) {
      for (auto& w : box->receivers) {
        waiterHomes_.erase(w.id);
        --receiversWaiting_;
        if (Handle* h = handle(w.fh)) h->parked.reset();
        after.push_back(detail::failWaiter(w, errnoOf(claimed.error())));
      }
      box->receivers.clear();
      return;
    }
    if (!acceptClaimed(box, std::move(*claimed), lock, after)) return;
  }
  dispatch(*box, after);
  for (WaiterId id : probes) {
    auto it = std::find_if(box->receivers.begin(), box->receivers.end(), [&](const Waiter& w) { return w.id == id; });
    if (it == box->receivers.end()) continue;
    Waiter w = std::move(*it);
    box->receivers.erase(it);
    waiterHomes_.erase(w.id);
    --receiversWaiting_;
    if (Handle* h = handle(w.fh)) h->parked.reset();
    after.push_back(detail::failWaiter(w, EAGAIN));
  }
}

// Messages just claimed for this host join the mirror's queue; if the mailbox was removed
// meanwhile they go straight back (false).
bool Engine::acceptClaimed(const MailboxPtr& box, std::vector<RemoteMessage>&& claimed, Lock& lock, After& after) {
  if (box->removed) {
    lock.unlock();
    for (const auto& m : claimed) (void)backend_->giveBack(box->id, m.seq, false);
    lock.lock();
    return false;
  }
  for (auto& m : claimed) injectClaimed(*box, std::move(m), after);
  return true;
}

void Engine::injectClaimed(Mailbox& box, RemoteMessage&& rm, After& after) {
  MessagePtr msg = fromRemote(std::move(rm));
  msg->uid = nextMessageUid_++;
  bytesUsed_ += msg->size();  // held here now; its sender's limit was checked where it was sent
  // A listing entry of the same message steps aside for the message itself.
  std::erase_if(box.remoteListing, [&](const MessagePtr& l) {
    if (l->remoteSeq() != msg->remoteSeq()) return false;
    forgetLocally(box, *messages_, l.get());
    return true;
  });
  enqueueTail(box, msg, after);
}

// Read to the end (or taken whole by a batch read): acknowledged once its reader confirms
// it got it (its next read or its close) -- at once if that read was the confirming one.
void Engine::awaitRemoteConfirmation(const MessagePtr& msg, Handle& h, pid_t reader) {
  msg->more().remoteReader = reader;
  if (msg->size() == 0 && h.batch == detail::Batch::None) {
    queueRemote({RemoteJob::Kind::Ack, h.box->id, msg->remoteSeq(), reader});
    return;
  }
  h.unconfirmed.push_back(msg);
}

void Engine::confirmAfterReply(uint64_t fh) {
  if (backend_) (void)confirmRemoteNow(fh, true);
}

Status Engine::confirmRemoteNow(uint64_t fh, bool early) {
  std::vector<MessagePtr> confirmed;
  MailboxPtr box;
  size_t prefetch = 0;
  {
    Lock lock(mutex_);
    Handle* h = nullptr;
    remoteConfirmed_.wait(lock, [&] {
      h = handle(fh);
      return !h || !h->confirming;
    });
    if (!h || !h->box || !h->box->remote) return {};
    if (h->confirmError != 0) return fail(std::exchange(h->confirmError, 0));
    if (h->unconfirmed.empty()) return {};
    h->confirming = true;
    confirmed = std::move(h->unconfirmed);
    h->unconfirmed.clear();
    box = h->box;
    // A plain reader taking its second message or more through one descriptor will want the
    // next: it is claimed in the same round trip, so that in the steady state a message costs
    // the receiving side one round trip, not two. (Not for its first: `cat .receive` reads
    // one message and closes.) It stays here while the reader keeps reading (see
    // giveBackLeftovers); a claim already due or a message already here makes it needless.
    if (h->batch == detail::Batch::None && h->streaming && box->mayHaveQueued && box->queue.empty() &&
        box->receivers.empty() && !box->removed) {
      prefetch = 1;
      box->mayHaveQueued = false;  // an event from now on sets it again
    }
    h->streaming = true;
  }
  std::vector<std::pair<uint64_t, uint32_t>> taken;
  for (const auto& msg : confirmed) taken.emplace_back(msg->remoteSeq(), static_cast<uint32_t>(msg->extra->remoteReader));
  auto r = backend_->ack(box->id, taken, prefetch);  // all in one round trip
  After after;
  std::function<void()> endRead;  // a read that came meanwhile (see Engine::read)
  Lock lock(mutex_);
  if (Handle* h = handle(fh)) {
    h->confirming = false;
    if (!r && early) h->confirmError = errnoOf(r.error());
    endRead = std::exchange(h->afterConfirm, nullptr);
  }
  if (r) {
    remoteAcksLost_ += r->lost;
    if (prefetch && r->claimed.size() == prefetch) box->mayHaveQueued = true;  // perhaps more
    (void)acceptClaimed(box, std::move(r->claimed), lock, after);
  } else if (prefetch) {
    box->mayHaveQueued = true;  // not known to be empty
  }
  lock.unlock();
  remoteConfirmed_.notify_all();  // unlocked: the reader's thread wakes to a free mutex
  run(after);
  if (endRead) endRead();
  if (!r) return fail(r.error());
  return {};
}

// Claimed messages nobody here waits for any more go back to the head of the shared queue.
// While a reader here that takes many (a batch reader, or a plain one reading message after
// message) keeps reading, they stay for its next read (claiming and giving back per read
// would cost two scripts per message); they go back when it closes, or at the first tick
// after a whole tick without a read from it.
void Engine::giveBackLeftovers(const MailboxPtr& box, Lock& lock) {
  if (!box->receivers.empty() || box->queue.empty()) return;
  for (const auto& [fh, h] : handles_)
    if (h->kind == HandleKind::Receiver && h->box == box && h->readTick + 1 >= remoteTickNo_ &&
        (h->batch != detail::Batch::None || h->streaming))
      return;
  std::vector<std::pair<uint64_t, bool>> back;
  while (!box->queue.empty()) {
    MessagePtr msg = box->queue.front();
    unqueue(*box, msg);
    releaseBytes(msg->size());
    if (msg->remoteSeq()) back.emplace_back(msg->remoteSeq(), cutShortHere(*msg));
  }
  lock.unlock();
  // Given back head first would reverse them: the last goes first, each to the head.
  for (auto it = back.rbegin(); it != back.rend(); ++it) (void)backend_->giveBack(box->id, it->first, it->second);
  lock.lock();
}

// Tells the backend how many receivers wait here (capacity 0 lets senders in for them);
// `renew` refreshes the registration's deadline.
void Engine::registerWaiting(const MailboxPtr& box, Lock& lock, bool renew) {
  // Only a rendezvous (capacity 0) needs to know: elsewhere it would cost two round trips
  // per message for nothing.
  uint32_t waiting = 0;
  if (!box->removed && box->capacity == 0)
    for (const Waiter& w : box->receivers)
      if (!w.nonblock) ++waiting;
  if (waiting == box->waitingRegistered && !(renew && waiting > 0)) return;
  lock.unlock();
  auto r = backend_->setWaiting(box->id, waiting);
  lock.lock();
  if (r) box->waitingRegistered = waiting;
}

void Engine::remoteTick(Lock& lock, After& after) {
  ++remoteTickNo_;  // readers that have not read since the one before no longer keep leftovers
  std::map<uint64_t, std::vector<uint64_t>> held;
  std::vector<MailboxPtr> active;
  std::vector<uint64_t> polled;
  for (auto& [id, box] : mailboxesById_) {
    if (!box->remote) continue;
    if (!box->pollers.empty() && box->receivers.empty()) polled.push_back(id);
    for (auto& m : box->queue)
      if (m->remoteSeq()) held[id].push_back(m->remoteSeq());
    if (!box->receivers.empty() || !box->senders.empty() || box->waitingRegistered > 0 || !box->queue.empty())
      active.push_back(box);
  }
  for (auto& [fh, h] : handles_) {
    if (!h->box || !h->box->remote) continue;
    if (h->current && h->current->remoteSeq()) held[h->box->id].push_back(h->current->remoteSeq());
    for (const auto& m : h->unconfirmed)
      if (m->remoteSeq()) held[h->box->id].push_back(m->remoteSeq());
  }
  std::vector<std::pair<uint64_t, pid_t>> holds;  // exclusive mailboxes held here: renewed
  std::vector<std::pair<uint64_t, pid_t>> binds;  // pair mailboxes' live members here: renewed
  for (auto& [id, box] : mailboxesById_) {
    if (!box->remote) continue;
    if (box->policy == detail::Policy::Exclusive)
      for (const auto& [pid, n] : box->receiverOpens) holds.emplace_back(id, pid);
    if (box->policy == detail::Policy::Pair) {
      dropDeadPairMembers(*box);
      for (const auto& b : box->pair) binds.emplace_back(id, b.pid);
    }
  }
  std::vector<std::shared_ptr<Semaphore>> semWaiting;
  for (auto& [id, sem] : semaphoresById_)
    if (sem->remote && !sem->waiters.empty()) semWaiting.push_back(sem);
  lock.unlock();
  for (const auto& [id, seqs] : held) (void)backend_->renew(id, seqs);
  // What a dead daemon held comes back once its lease has run out: every claim, listing
  // and .status hands expired claims back first, so the tick needs to only where
  // something here waits without claiming (a poll), whose POLLIN then comes with the
  // announcement. (Not every mailbox every tick: idle mailboxes cost Redis nothing.)
  for (uint64_t id : polled) (void)backend_->reclaim(id);
  for (auto [id, pid] : holds) (void)backend_->hold(id, static_cast<uint32_t>(pid));
  for (auto [id, pid] : binds) (void)backend_->bind(id, static_cast<uint32_t>(pid));
  lock.lock();
  for (const auto& box : active)
    if (!box->removed) serveRemote(box, lock, after, true);  // the safety net for a lost event
  for (const auto& sem : semWaiting) remoteSemWake(sem->id, lock, after);
}

// The backend is unreachable: nobody waits for it (EIO), as every call now fails.
void Engine::failRemoteWaiters(int err, After& after) {
  for (auto& [id, box] : mailboxesById_) {
    if (!box->remote) continue;
    for (auto* list : {&box->receivers, &box->senders}) {
      for (auto& w : *list) {
        waiterHomes_.erase(w.id);
        if (w.kind == WaitKind::Receive) {
          --receiversWaiting_;
          if (Handle* h = handle(w.fh)) h->parked.reset();
        } else {
          --sendersWaiting_;
          if (w.msg) releaseBytes(w.msg->size());
          for (const auto& m : w.batch) releaseBytes(m->size());
          if (w.msg && w.msg->state == MessageState::Composing) forgetLocally(*box, *messages_, w.msg.get());
          if (w.kind == WaitKind::SendBatch && w.batchEntered > 0) {
            after.push_back([d = std::move(w.onWrite), n = w.batchEnds[w.batchEntered - 1]] { d(n); });
            continue;
          }
        }
        after.push_back(detail::failWaiter(w, err));
      }
      list->clear();
    }
    box->waitingRegistered = 0;
    wakePollers(*box, after);
  }
  for (auto& [id, sem] : semaphoresById_) {
    if (!sem->remote) continue;
    for (auto& w : sem->waiters) {
      semWaiterHomes_.erase(w.id);
      --receiversWaiting_;
      after.push_back(detail::failWaiter(w, err));
    }
    sem->waiters.clear();
  }
}

// ---- mirrors of mailboxes ----

Engine::MailboxPtr Engine::mirrorMailbox(const RemoteMailbox& rm) {
  auto box = std::make_shared<Mailbox>();
  box->id = rm.id;
  box->name = rm.name;
  box->remote = true;
  box->atime = box->mtime = box->ctime = fromNs(rm.ctimeNs);
  applyRemoteSettings(*box, rm);
  mailboxesById_.emplace(box->id, box);
  mailboxesByName_.emplace(box->name, box);
  return box;
}

void Engine::applyRemoteSettings(Mailbox& box, const RemoteMailbox& rm) const {
  box.mode = rm.mode & 07777;
  box.uid = rm.uid;
  box.gid = rm.gid;
  box.capacity = rm.capacity;
  box.policy = policyFrom(rm.policy);
  box.maxMsgSize = rm.maxMsgSize;
  if (rm.mtimeNs > 0) box.mtime = fromNs(rm.mtimeNs);
  if (rm.ctimeNs > 0 && toNs(box.ctime) < rm.ctimeNs) box.ctime = fromNs(rm.ctimeNs);
}

RemoteMailbox Engine::remoteRecord(const Mailbox& box) const {
  RemoteMailbox rm;
  rm.id = box.id;
  rm.name = box.name;
  rm.mode = box.mode;
  rm.uid = box.uid;
  rm.gid = box.gid;
  rm.ctimeNs = toNs(box.ctime);
  rm.mtimeNs = toNs(box.mtime);
  rm.capacity = box.capacity;
  rm.policy = std::string(detail::policyName(box.policy));
  rm.maxMsgSize = box.maxMsgSize;
  return rm;
}

// Brings the mirrors in line with the backend's names: new ones appear, removed ones go
// (their waiters get EIDRM), renamed ones move.
Status Engine::syncRemoteMailboxes() {
  std::lock_guard sync(remoteSyncMutex_);
  auto index = backend_->mailboxIndex();
  if (!index) return fail(index.error());
  std::vector<uint64_t> unknown;
  After after;
  {
    std::lock_guard lock(mutex_);
    std::set<uint64_t> live;
    for (const auto& [name, id] : *index) {
      live.insert(id);
      auto box = mailboxById(id);
      if (!box) {
        unknown.push_back(id);
      } else if (box->name != name) {
        if (auto it = mailboxesByName_.find(box->name); it != mailboxesByName_.end() && it->second == box)
          mailboxesByName_.erase(it);
        box->name = name;
        mailboxesByName_.insert_or_assign(box->name, box);
      }
    }
    std::vector<MailboxPtr> gone;
    for (auto& [id, box] : mailboxesById_)
      if (box->remote && !live.contains(id)) gone.push_back(box);
    for (const auto& box : gone) {
      for (const auto& l : box->remoteListing) forgetLocally(*box, *messages_, l.get());
      destroyMailbox(box, after);
    }
  }
  run(after);
  std::vector<RemoteMailbox> fresh;
  for (uint64_t id : unknown)
    if (auto rm = backend_->mailbox(id)) fresh.push_back(std::move(*rm));
  std::lock_guard lock(mutex_);
  for (const auto& rm : fresh) {
    if (mailboxById(rm.id)) continue;
    if (auto it = mailboxesByName_.find(rm.name); it != mailboxesByName_.end()) {
      if (!it->second->remote) continue;
      mailboxesByName_.erase(it);  // a stale mirror under that name; its id is gone or renamed
    }
    mirrorMailbox(rm);
  }
  return {};
}

// The backend's queued messages, as listing entries of the mirror.
Status Engine::syncRemoteListing(uint64_t boxId) {
  auto queued = backend_->queued(boxId, kListingMax);
  if (!queued) return fail(queued.error());
  std::vector<RemoteMessage>& withPayloads = *queued;
  std::lock_guard lock(mutex_);
  auto box = mailboxById(boxId);
  if (!box || !box->remote) return {};
  // Entries keep their inode numbers (and readdir offsets) from listing to listing: only
  // what left goes, only what came is added.
  std::map<uint64_t, MessagePtr> previous;
  for (auto& l : box->remoteListing) previous.emplace(l->remoteSeq(), std::move(l));
  box->remoteListing.clear();
  for (auto& rm : withPayloads) {
    if (auto kept = previous.find(rm.seq); kept != previous.end()) {
      kept->second->setRedeliveries(rm.redeliveries);
      box->remoteListing.push_back(std::move(kept->second));
      previous.erase(kept);
      continue;
    }
    MessagePtr msg = fromRemote(std::move(rm));
    if (detail::findByName(*box, msg->name())) continue;  // claimed here meanwhile
    msg->uid = nextMessageUid_++;
    msg->state = MessageState::Queued;
    detail::addName(*box, msg.get());
    messages_->insert(msg.get());
    box->remoteListing.push_back(std::move(msg));
  }
  for (auto& [seq, l] : previous) forgetLocally(*box, *messages_, l.get());
  // In seq order: the listing pages by seq.
  std::sort(box->remoteListing.begin(), box->remoteListing.end(),
            [](const MessagePtr& x, const MessagePtr& y) { return x->seq < y->seq; });
  return {};
}

// A name not known here may have been made on another host since the last event.
Status Engine::refreshIfMissing(uint64_t parent, std::string_view name) {
  uint64_t listingOf = 0;
  {
    std::lock_guard lock(mutex_);
    if (parent == ino::kMailboxes && mailboxesByName_.contains(name)) return {};
    if (parent == ino::kSem && semaphores_.contains(name)) return {};
    if (parent == ino::kById) {
      uint64_t id = 0;
      auto [end, ec] = std::from_chars(name.data(), name.data() + name.size(), id);
      if (ec == std::errc{} && end == name.data() + name.size() && mailboxById(id)) return {};
    }
    if (ino::kindOf(parent) == ino::Kind::Mailbox) {
      auto box = mailboxById(ino::idOf(parent));
      if (!box || !box->remote || isReservedName(name) || name.starts_with('.')) return {};
      listingOf = box->id;
    }
  }
  if (listingOf) return syncRemoteListing(listingOf);
  return parent == ino::kSem ? syncRemoteSemaphores() : syncRemoteMailboxes();
}

Result<struct stat> Engine::mkdirRemote(std::string_view name, mode_t mode, const Caller& who) {
  if (auto ok = validateName(name); !ok) return fail(ok.error());
  std::lock_guard sync(remoteSyncMutex_);
  RemoteMailbox rm;
  {
    std::lock_guard lock(mutex_);
    if (mailboxesByName_.contains(name)) return fail(EEXIST);
    rm.name = std::string(name);
    rm.mode = mode & 07777;
    rm.uid = who.uid;
    rm.gid = who.gid;
    rm.ctimeNs = rm.mtimeNs = toNs(now());
    rm.maxMsgSize = limits_.defaultMaxMsgSize;
  }
  auto made = backend_->createMailbox(rm);
  if (!made) return fail(made.error());
  std::lock_guard lock(mutex_);
  auto box = mailboxById(made->id);
  if (!box) {
    if (auto it = mailboxesByName_.find(made->name); it != mailboxesByName_.end() && it->second->remote)
      mailboxesByName_.erase(it);
    box = mirrorMailbox(*made);
  }
  return mailboxStat(*box);
}

Status Engine::rmdirRemote(std::string_view name) {
  RemoteMailbox rm;
  {
    std::lock_guard lock(mutex_);
    auto it = mailboxesByName_.find(name);
    if (it == mailboxesByName_.end()) return fail(ENOENT);
    const MailboxPtr& box = it->second;
    // Held here (claimed, being read, being written) keeps it, as on one host.
    if (!box->queue.empty() || !box->senders.empty()) return fail(ENOTEMPTY);
    for (const auto& [fh, h] : handles_)
      if (h->box == box && (h->current || (h->dropIn && !h->delivered && !h->discarded))) return fail(ENOTEMPTY);
    rm = remoteRecord(*box);
  }
  // Queued anywhere keeps it too, and so does claimed on another host (being read there, or
  // claimed ahead for a reader there).
  auto queued = backend_->queued(rm.id, 1);
  if (!queued) return fail(queued.error());
  if (!queued->empty()) return fail(ENOTEMPTY);
  auto claimed = backend_->stats(rm.id);  // (cheap with nothing queued)
  if (!claimed) return fail(claimed.error());
  if (claimed->claimed > 0) return fail(ENOTEMPTY);
  if (auto r = backend_->removeMailbox(rm); !r) return r;
  After after;
  {
    std::lock_guard lock(mutex_);
    if (auto box = mailboxById(rm.id)) {
      for (const auto& l : box->remoteListing) forgetLocally(*box, *messages_, l.get());
      destroyMailbox(box, after);
    }
  }
  run(after);
  return {};
}

Status Engine::renameRemote(std::string_view name, std::string_view newName) {
  std::lock_guard sync(remoteSyncMutex_);
  uint64_t id = 0;
  {
    std::lock_guard lock(mutex_);
    if (auto ok = validateName(newName); !ok) return fail(ok.error());
    auto it = mailboxesByName_.find(name);
    if (it == mailboxesByName_.end()) return fail(ENOENT);
    if (name == newName) return {};
    if (mailboxesByName_.contains(newName)) return fail(EEXIST);
    id = it->second->id;
  }
  if (auto r = backend_->renameMailbox(id, std::string(name), std::string(newName)); !r) return r;
  std::lock_guard lock(mutex_);
  if (auto box = mailboxById(id)) {
    if (auto it = mailboxesByName_.find(box->name); it != mailboxesByName_.end() && it->second == box)
      mailboxesByName_.erase(it);
    box->name = std::string(newName);
    box->ctime = now();
    mailboxesByName_.insert_or_assign(box->name, box);
  }
  return {};
}


// chmod, chown, touch of a shared mailbox, chmod and chown of a shared semaphore: written
// to the backend with the values this change set (the mirror may meanwhile take an older
// refresh). Anything else is not shared.
Status Engine::shareSetattr(uint64_t ino, const struct stat& st, const AttrChange& change) {
  auto asSet = [&](auto& values) {  // RemoteMailbox or RemoteSemaphore
    values.id = ino::idOf(ino);
    values.mode = st.st_mode & 07777;
    values.uid = st.st_uid;
    values.gid = st.st_gid;
    values.mtimeNs = toNs(st.st_mtim);
    return values;
  };
  const auto kind = ino::kindOf(ino);
  if (kind == ino::Kind::Mailbox) {
    std::vector<Backend::Field> fields{Backend::Field::Times};
    if (change.mode) fields.push_back(Backend::Field::Mode);
    if (change.uid || change.gid) fields.push_back(Backend::Field::Owner);
    RemoteMailbox values;
    values.ctimeNs = toNs(st.st_ctim);
    return backend_->updateMailbox(asSet(values), fields);
  }
  if (kind == ino::Kind::Semaphore && (change.mode || change.uid || change.gid)) {
    RemoteSemaphore values;
    return backend_->updateSemaphore(asSet(values));
  }
  return {};
}

// rm of a listed message of a shared mailbox: removed from the shared queue if still there.
Status Engine::unlinkRemoteMessage(uint64_t parent, std::string_view name) {
  const uint64_t boxId = ino::idOf(parent);
  {
    std::lock_guard lock(mutex_);
    auto box = mailboxByIno(parent);
    if (!box || !box->remote) return fail(ENOENT);
    if (std::none_of(box->remoteListing.begin(), box->remoteListing.end(),
                     [&](const MessagePtr& l) { return l->name() == name; }))
      return fail(ENOENT);
  }
  if (auto r = backend_->removeQueued(boxId, std::string(name)); !r) return r;
  std::lock_guard lock(mutex_);
  if (auto box = mailboxById(boxId)) {
    std::erase_if(box->remoteListing, [&](const MessagePtr& l) {
      if (l->name() != name) return false;
      forgetLocally(*box, *messages_, l.get());
      return true;
    });
    ++discarded_;
    box->mtime = box->ctime = now();
  }
  return {};
}

Status Engine::refreshRemote(uint64_t ino) {
  const auto kind = ino::kindOf(ino);
  const uint64_t id = ino::idOf(ino);
  bool mailbox = false, semaphore = false;
  std::string messageName;
  uint64_t messageBox = 0;
  {
    std::lock_guard lock(mutex_);
    if (kind == ino::Kind::Semaphore) {
      auto it = semaphoresById_.find(id);
      semaphore = it != semaphoresById_.end() && it->second->remote;
    } else if (kind == ino::Kind::Message) {
      for (auto& [boxId, box] : mailboxesById_) {
        if (!box->remote) continue;
        for (const auto& l : box->remoteListing)
          if (l->uid == id) {
            messageName = l->name();
            messageBox = boxId;
          }
      }
    } else if (kind == ino::Kind::Mailbox || kind == ino::Kind::Status) {
      auto box = mailboxById(id);
      mailbox = box && box->remote;
    }
  }
  if (semaphore) {
    auto rs = backend_->semaphore(id);
    if (!rs) return fail(rs.error());
    std::lock_guard lock(mutex_);
    if (auto it = semaphoresById_.find(id); it != semaphoresById_.end()) {
      it->second->value = rs->value;
      it->second->mode = rs->mode & 07777;
      it->second->uid = rs->uid;
      it->second->gid = rs->gid;
    }
  } else if (messageBox) {
    // A peek: the message must still be queued (its bytes came with the listing).
    auto rm = backend_->peek(messageBox, messageName);
    if (!rm) return fail(rm.error());
  } else if (mailbox) {
    if (auto fresh = refreshRemoteSettings(id); !fresh) return fresh;
    auto st = backend_->stats(id);
    if (!st) return fail(st.error());
    std::lock_guard lock(mutex_);
    if (auto box = mailboxById(id)) {
      box->remoteMessages = st->messages;
      box->remoteBytes = st->bytes;
      box->sent = st->sent;
      box->received = st->received;
      box->redelivered = st->redelivered;
    }
  }
  return {};
}

Status Engine::refreshRemoteSettings(uint64_t id) {
  auto rm = backend_->mailbox(id);
  if (!rm) return fail(rm.error());
  std::lock_guard lock(mutex_);
  if (auto box = mailboxById(id); box && box->remote) applyRemoteSettings(*box, *rm);
  return {};
}

Status Engine::holdRemote(uint64_t ino, pid_t pid) {
  const auto kind = ino::kindOf(ino);
  const bool receiving = kind == ino::Kind::Receive || kind == ino::Kind::ReceiveLines || kind == ino::Kind::ReceiveFrames;
  const bool sending = kind == ino::Kind::Send || kind == ino::Kind::SendLines || kind == ino::Kind::SendFrames;
  if (!receiving && !sending) return {};
  {
    std::lock_guard lock(mutex_);
    auto box = mailboxById(ino::idOf(ino));
    if (!box || !box->remote) return {};
  }
  // The settings as of now, not as of the last event: a sender's writes are held to the
  // max_msg_size another host set a moment ago, and the policy is the current one.
  if (auto fresh = refreshRemoteSettings(ino::idOf(ino)); !fresh)
    return fail(fresh.error() == std::errc::no_such_file_or_directory ? std::errc::identifier_removed : fresh.error());
  detail::Policy policy{};
  {
    std::lock_guard lock(mutex_);
    auto box = mailboxById(ino::idOf(ino));
    if (!box) return fail(EIDRM);
    policy = box->policy;
  }
  if (policy == detail::Policy::Exclusive && receiving) {
    auto held = backend_->hold(ino::idOf(ino), static_cast<uint32_t>(pid));
    if (!held) return fail(held.error());
    if (!*held) return fail(EBUSY);
  }
  if (policy == detail::Policy::Pair) {
    auto bound = backend_->bind(ino::idOf(ino), static_cast<uint32_t>(pid));
    if (!bound) return fail(bound.error());
    if (!*bound) return fail(EPERM);
  }
  return {};
}

std::optional<bool> Engine::remoteReadable(uint64_t fh) {
  uint64_t boxId = 0, semId = 0;
  {
    std::lock_guard lock(mutex_);
    Handle* h = handle(fh);
    if (!h) return std::nullopt;
    if (h->kind == HandleKind::Receiver && h->box->remote && !h->current && !h->atEnd && h->box->queue.empty())
      boxId = h->box->id;
    else if (h->kind == HandleKind::Semaphore && h->semaphore->remote)
      semId = h->semaphore->id;
    else
      return std::nullopt;
  }
  if (boxId) {
    auto n = backend_->queueLength(boxId);
    return n && *n > 0;
  }
  auto rs = backend_->semaphore(semId);
  return rs && rs->value > 0;
}

// Forwarding between shared mailboxes: taken out of the source's queue first (so nobody
// can receive it twice), then pushed into the target as a non-blocking send; if the target
// refuses, it goes back into the source (at its tail) and the mv fails.
Status Engine::forwardRemote(uint64_t parent, std::string_view name, uint64_t newParent, std::string_view newName) {
  RemoteMessage rm;
  uint64_t fromId = 0, toId = 0;
  {
    std::lock_guard lock(mutex_);
    auto from = mailboxByIno(parent);
    auto to = mailboxByIno(newParent);
    if (!from || !to || !from->remote || !to->remote) return fail(EXDEV);
    if (auto ok = validateName(newName); !ok) return fail(ok.error());
    if (isReservedName(name)) return fail(EPERM);
    auto entry = std::find_if(from->remoteListing.begin(), from->remoteListing.end(),
                              [&](const MessagePtr& l) { return l->name() == name; });
    if (entry == from->remoteListing.end()) return fail(EXDEV);  // not a queued shared message: local rules
    if (detail::findByName(*to, newName)) return fail(EEXIST);
    const Message& m = **entry;
    rm.name = std::string(newName);
    rm.payload = std::string(m.payload());
    rm.pid = static_cast<uint32_t>(m.senderPid);
    rm.uid = m.uid_;
    rm.gid = m.gid;
    rm.mode = m.mode;
    rm.sentNs = toNs(m.mtime());
    fromId = from->id;
    toId = to->id;
  }
  if (auto removed = backend_->removeQueued(fromId, std::string(name)); !removed) return removed;
  auto pushed = backend_->push(toId, {rm});
  if (!pushed || pushed->seqs.empty()) {
    rm.name = std::string(name);
    (void)backend_->push(fromId, {rm});
    return fail(!pushed ? static_cast<int>(pushed.error()) : pushed->refused);
  }
  std::lock_guard lock(mutex_);
  if (auto from = mailboxById(fromId)) {
    std::erase_if(from->remoteListing, [&](const MessagePtr& l) {
      if (l->name() != name) return false;
      forgetLocally(*from, *messages_, l.get());
      return true;
    });
    from->mtime = from->ctime = now();
  }
  return {};
}

// ---- semaphores ----

Status Engine::syncRemoteSemaphores() {
  std::lock_guard sync(remoteSyncMutex_);
  auto sems = backend_->semaphores();
  if (!sems) return fail(sems.error());
  std::lock_guard lock(mutex_);
  std::set<std::string, std::less<>> live;
  for (const auto& rs : *sems) {
    live.insert(rs.name);
    auto byId = semaphoresById_.find(rs.id);
    if (byId != semaphoresById_.end()) {
      auto& sem = *byId->second;
      sem.mode = rs.mode & 07777;
      sem.uid = rs.uid;
      sem.gid = rs.gid;
      sem.value = rs.value;
      if (sem.name != rs.name && semaphores_.contains(sem.name) && semaphores_[sem.name] == byId->second) {
        semaphores_.erase(sem.name);
        sem.name = rs.name;
        semaphores_.insert_or_assign(sem.name, byId->second);
      }
      continue;
    }
    if (auto it = semaphores_.find(rs.name); it != semaphores_.end()) {
      if (!it->second->remote) continue;
      it->second->unlinked = true;  // a stale mirror under that name
      semaphores_.erase(it);
    }
    auto sem = std::make_shared<Semaphore>();
    sem->id = rs.id;
    sem->name = rs.name;
    sem->mode = rs.mode & 07777;
    sem->uid = rs.uid;
    sem->gid = rs.gid;
    sem->value = rs.value;
    sem->remote = true;
    sem->atime = sem->mtime = sem->ctime = fromNs(rs.mtimeNs);
    semaphores_.emplace(sem->name, sem);
    semaphoresById_.emplace(sem->id, sem);
  }
  std::vector<std::string> gone;
  for (auto& [name, sem] : semaphores_)
    if (sem->remote && !live.contains(name)) gone.push_back(name);
  for (const auto& name : gone) {
    auto it = semaphores_.find(name);
    it->second->unlinked = true;
    if (!shmSemOpens_.contains(ino::make(ino::Kind::Semaphore, it->second->id))) semaphoresById_.erase(it->second->id);
    semaphores_.erase(it);
  }
  return {};
}

Result<std::pair<struct stat, Opened>> Engine::createRemoteSemaphore(std::string_view name, mode_t mode, int flags,
                                                                     const Caller& who) {
  if (auto ok = validateName(name); !ok) return fail(ok.error());
  {
    std::lock_guard lock(mutex_);
    if (auto it = semaphores_.find(name); it != semaphores_.end()) {
      if (flags & O_EXCL) return fail(EEXIST);
    }
  }
  RemoteSemaphore rs;
  rs.name = std::string(name);
  rs.mode = mode & 07777;
  rs.uid = who.uid;
  rs.gid = who.gid;
  rs.mtimeNs = toNs(now());
  auto made = backend_->createSemaphore(rs);
  if (!made && made.error() == std::errc::file_exists && !(flags & O_EXCL)) {
    (void)syncRemoteSemaphores();  // made elsewhere meanwhile: open that one
  } else if (!made) {
    return fail(made.error());
  } else {
    (void)syncRemoteSemaphores();
  }
  uint64_t ino = 0;
  {
    std::lock_guard lock(mutex_);
    auto it = semaphores_.find(name);
    if (it == semaphores_.end()) return fail(EIO);
    ino = ino::make(ino::Kind::Semaphore, it->second->id);
  }
  auto opened = open(ino, flags & ~(O_CREAT | O_EXCL), who);
  if (!opened) return fail(opened.error());
  auto st = getattr(ino);
  if (!st) return fail(st.error());
  return std::pair{*st, *opened};
}

Status Engine::unlinkRemoteSemaphore(std::string_view name) {
  // Held throughout: the "names" event of this very removal must not have a sync take the
  // mirror away between the backend's answer and the local removal (a false ENOENT).
  std::lock_guard sync(remoteSyncMutex_);
  RemoteSemaphore rs;
  {
    std::lock_guard lock(mutex_);
    auto it = semaphores_.find(name);
    if (it == semaphores_.end()) return fail(ENOENT);
    rs.id = it->second->id;
    rs.name = it->second->name;
  }
  if (auto r = backend_->removeSemaphore(rs); !r) return r;
  std::lock_guard lock(mutex_);
  return unlinkShmSem(ino::kSem, name);
}

Status Engine::renameRemoteSemaphore(std::string_view name, std::string_view newName) {
  std::lock_guard sync(remoteSyncMutex_);  // no sync of names fetched before it lands after it
  uint64_t id = 0;
  {
    std::lock_guard lock(mutex_);
    if (auto ok = validateName(newName); !ok) return fail(ok.error());
    auto it = semaphores_.find(name);
    if (it == semaphores_.end()) return fail(ENOENT);
    if (name == newName) return {};
    if (semaphores_.contains(newName)) return fail(EEXIST);  // never replaced, as on one host
    id = it->second->id;
  }
  if (auto r = backend_->renameSemaphore(id, std::string(name), std::string(newName)); !r) return r;
  std::lock_guard lock(mutex_);
  return renameShmSem(ino::kSem, name, newName);
}

// A write to a shared semaphore posts in the backend; nullopt: not a shared semaphore.
std::optional<Result<size_t>> Engine::postRemoteSemaphore(uint64_t fh, std::string_view data) {
  uint64_t id = 0;
  {
    std::lock_guard lock(mutex_);
    Handle* h = handle(fh);
    if (!h || h->kind != HandleKind::Semaphore || !h->semaphore->remote) return std::nullopt;
    id = h->semaphore->id;
  }
  auto n = parsePost(data);  // the same text as a local post
  if (!n) return Result<size_t>(fail(n.error()));
  if (*n > kSemValueMax) return Result<size_t>(fail(EOVERFLOW));
  auto posted = backend_->post(id, *n);
  if (!posted) return Result<size_t>(fail(posted.error()));
  {
    std::lock_guard lock(mutex_);
    if (auto it = semaphoresById_.find(id); it != semaphoresById_.end()) {
      it->second->value = *posted;
      it->second->mtime = it->second->ctime = now();
      if (!it->second->waiters.empty()) requestSemWake(*it->second);
    }
  }
  return Result<size_t>(data.size());
}

// Serves parked waits of a shared semaphore in order while the backend's value allows.
void Engine::remoteSemWake(uint64_t id, Lock& lock, After& after) {
  auto it = semaphoresById_.find(id);
  if (it == semaphoresById_.end()) return;
  std::shared_ptr<Semaphore> sem = it->second;
  sem->wakeQueued = false;
  std::vector<WaiterId> probes;
  for (const Waiter& w : sem->waiters)
    if (w.nonblock) probes.push_back(w.id);
  while (!sem->waiters.empty()) {
    lock.unlock();
    auto r = backend_->tryWait(id);
    lock.lock();
    if (!r || !*r) {
      if (!r) {
        for (auto& w : sem->waiters) {
          semWaiterHomes_.erase(w.id);
          --receiversWaiting_;
          after.push_back(detail::failWaiter(w, errnoOf(r.error())));
        }
        sem->waiters.clear();
      }
      break;
    }
    sem->value = **r;
    if (sem->waiters.empty()) {  // cancelled meanwhile: the wait goes back
      lock.unlock();
      (void)backend_->post(id, 1);
      lock.lock();
      break;
    }
    Waiter w = std::move(sem->waiters.front());
    sem->waiters.pop_front();
    semWaiterHomes_.erase(w.id);
    --receiversWaiting_;
    auto text = std::make_shared<const std::string>(std::to_string(**r) + "\n");
    after.push_back([d = std::move(w.onRead), chunk = Bytes::slice(text, 0, w.size)] { d(chunk); });
  }
  for (WaiterId wid : probes) {
    auto w = std::find_if(sem->waiters.begin(), sem->waiters.end(), [&](const Waiter& x) { return x.id == wid; });
    if (w == sem->waiters.end()) continue;
    semWaiterHomes_.erase(w->id);
    --receiversWaiting_;
    after.push_back(detail::failWaiter(*w, EAGAIN));
    sem->waiters.erase(w);
  }
}

}  // namespace ipcfs
