// Queues and flow control: delivering into a mailbox (waiting for room, or at capacity 0
// for a receiver), taking, redelivering, receipts, and handing messages to parked
// receivers and parked senders the moment they can proceed.
#include <algorithm>
#include <cerrno>

#include <fmt/format.h>

#include "clock.hpp"
#include "ipcfs/engine.hpp"
#include "objects.hpp"

namespace ipcfs {

using detail::Handle;
using detail::Mailbox;
using detail::MessageState;
using detail::WaitKind;
using detail::Waiter;

void Engine::run(After& after) {
  for (size_t i = 0; i < after.size(); ++i) after[i]();
  after.clear();
}

// REQUIRES: mutex_ held (for everything below).
Status Engine::reserveBytes(uint64_t n) {
  if (limits_.maxBytes != kUnlimited && (n > limits_.maxBytes || bytesUsed_ > limits_.maxBytes - n))
    return fail(ENOSPC);
  bytesUsed_ += n;
  return {};
}

void Engine::releaseBytes(uint64_t n) { bytesUsed_ -= std::min(n, bytesUsed_); }

// A waiter keeps the id it was given (a receipt read that waited to send first goes on
// waiting under the id the adapter registered for interrupts).
WaiterId Engine::parkWaiter(Mailbox& box, std::list<Waiter>& list, Waiter w) {
  if (w.id == 0) w.id = nextWaiter_++;
  const WaiterId id = w.id;
  if (w.kind == WaitKind::Receive) ++receiversWaiting_;
  if (w.kind == WaitKind::Send || w.kind == WaitKind::SendBatch) ++sendersWaiting_;
  list.push_back(std::move(w));
  waiterHomes_.emplace(id, &box);
  return id;
}

WaiterId Engine::parkRead(std::list<Waiter>& list, uint64_t fh, size_t size, ReadCompletion& done) {
  Waiter w;
  w.kind = WaitKind::Receive;
  w.id = nextWaiter_++;
  w.fh = fh;
  w.size = size;
  w.onRead = std::move(done);
  list.push_back(std::move(w));
  ++receiversWaiting_;
  return list.back().id;
}

// A shared mailbox's room is the backend's to say, when its messages are pushed.
bool Engine::hasRoom(const Mailbox& box) const {
  if (box.remote) return true;
  return box.capacity == kUnlimited || box.queue.size() + box.reserved < box.capacity;
}

void Engine::enqueueTail(Mailbox& box, const MessagePtr& msg, After& after) {
  enqueueAt(box, msg, ++box.tailKey, after);
}

// A message its reader left half-read goes back before every other.
void Engine::requeueHead(Mailbox& box, const MessagePtr& msg, After& after) {
  enqueueAt(box, msg, --box.headKey, after);
}

// Puts a message into every index of its mailbox at queue position `order`.
void Engine::enqueueAt(Mailbox& box, const MessagePtr& msg, int64_t order, After& after) {
  msg->order = order;
  msg->state = MessageState::Queued;
  if (box.queue.empty() || box.queue.back()->order < order) {
    box.queue.push_back(msg);
  } else if (order < box.queue.front()->order) {
    box.queue.push_front(msg);
  } else {  // (only a state directory being loaded puts messages in between)
    box.queue.insert(std::lower_bound(box.queue.begin(), box.queue.end(), order,
                                      [](const MessagePtr& m, int64_t o) { return m->order < o; }),
                     msg);
  }
  // A drop-in holds its name and inode since its create.
  if (!msg->namedBySeq() || box.bySeq.find(msg->seq) != msg.get()) detail::addName(box, msg.get());
  if (messages_->find(msg->uid) != msg.get()) messages_->insert(msg.get());
  const size_t size = msg->size();
  box.queuedBytes += size;
  ++queuedMessages_;
  queuedBytes_ += size;
  wakePollers(box, after);
  if (journal_) journalMessage(box, *msg);
}

// Takes a queued message out of every index of its mailbox.
void Engine::unqueue(Mailbox& box, const MessagePtr& msg) {
  if (auto it = detail::queuePosition(box, msg->order); it != box.queue.end() && *it == msg) box.queue.erase(it);
  detail::eraseName(box, msg.get());
  messages_->erase(msg.get());
  const size_t size = msg->size();
  box.queuedBytes -= size;
  --queuedMessages_;
  queuedBytes_ -= size;
}

void Engine::assignSeqAndName(Mailbox& box, detail::Message& msg) {
  msg.seq = box.nextSeq++;
  if (msg.namedBySeq()) {
    // Named by sequence number; skip numbers whose name a forwarded message already took.
    while (!box.byName.empty() && box.byName.contains(detail::seqName(msg.seq))) msg.seq = box.nextSeq++;
  }
  const timespec t = now();
  msg.setTimes(t);
  box.mtime = box.ctime = t;
  if (box.owner != 0) recordLineage(msg);
  ++box.sent;
  ++messagesSent_;
}

// The message now belongs to the receiver: not listed, not receivable by others, its name
// still taken until it is read to the end or comes back.
void Engine::takeInto(Mailbox& box, const MessagePtr& msg, Handle& h) {
  detail::addName(box, msg.get());
  msg->state = MessageState::InFlight;
  h.current = msg;
  h.offset = 0;
  h.atEnd = false;
}

namespace {

// The message a blocked sender would hand over next.
const std::shared_ptr<detail::Message>& offeredBy(const Waiter& w) { return w.kind == WaitKind::SendBatch ? w.batch.front() : w.msg; }

}  // namespace

// A message is there for a receiver: queued, or held by a blocked sender (rendezvous).
// With `from`, only one sent by that process or its descendants counts (procs/P/from/Q):
// found by a scan, as inboxes hold few messages and from/ is their only filtered reader.
bool Engine::canTake(const Mailbox& box, pid_t from) const {
  // A shared mailbox's senders wait to be pushed: they meet receivers only there.
  if (from == 0) return !box.queue.empty() || (!box.remote && !box.senders.empty());
  for (const auto& msg : box.queue)
    if (detail::sentBy(*msg, from)) return true;
  for (const auto& w : box.senders)
    if (detail::sentBy(*offeredBy(w), from)) return true;
  return false;
}

// The message a receiver would get next. REQUIRES: canTake(box).
const Engine::MessagePtr& Engine::peekNext(const Mailbox& box) const {
  if (!box.queue.empty()) return box.queue.front();
  return offeredBy(box.senders.front());
}

// Takes the next message out of the mailbox (the next one `from` sent, with `from`): from
// the queue, or straight from a blocked sender (sender and receiver meet). Its name is no
// longer taken. REQUIRES: canTake(box, from).
Engine::MessagePtr Engine::popNext(Mailbox& box, After& after, pid_t from) {
  for (const auto& queued : box.queue) {
    if (!detail::sentBy(*queued, from)) continue;
    MessagePtr msg = queued;
    unqueue(box, msg);
    return msg;
  }
  auto sender = box.senders.begin();
  while (!detail::sentBy(*offeredBy(*sender), from)) ++sender;
  return takeFromSender(box, sender, after);
}

// The message a blocked sender offers goes straight to a receiver; the sender is done
// once its last message went.
Engine::MessagePtr Engine::takeFromSender(Mailbox& box, std::list<Waiter>::iterator sender, After& after) {
  if (sender->kind == WaitKind::SendBatch) {
    MessagePtr msg = sender->batch.front();
    sender->batch.pop_front();
    assignSeqAndName(box, *msg);
    if (journal_) journalHandedOver(box, *msg);
    ++sender->batchEntered;
    if (sender->batch.empty()) {
      Waiter w = std::move(*sender);
      box.senders.erase(sender);
      waiterHomes_.erase(w.id);
      --sendersWaiting_;
      if (Handle* h = handle(w.fh)) h->draft = std::move(w.leftover);
      after.push_back([done = std::move(w.onWrite), n = w.batchTotal] { done(n); });
    }
    return msg;
  }
  Waiter w = std::move(*sender);
  box.senders.erase(sender);
  waiterHomes_.erase(w.id);
  --sendersWaiting_;
  assignSeqAndName(box, *w.msg);
  if (journal_) journalHandedOver(box, *w.msg);
  if (Handle* h = handle(w.fh)) sent(*h, w.msg, w.onStatus, w.onRead, w.size, after, w.id);
  return w.msg;
}

// REQUIRES: canTake(box, h.from).
void Engine::takeNext(Mailbox& box, Handle& h, pid_t reader, After& after) {
  (void)reader;
  takeInto(box, popNext(box, after, h.from), h);
}

// A message read to the end (or taken whole by a batch read) is gone; its sender may
// learn who took it.
void Engine::finishTaken(Mailbox& box, const MessagePtr& msg, Handle& h, pid_t reader, After& after) {
  releaseBytes(msg->size());
  if (journal_) awaitConfirmation(box, msg, h);
  if (msg->remoteSeq()) awaitRemoteConfirmation(msg, h, reader);
  ++box.received;
  ++messagesReceived_;
  settleReceipt(*msg, fmt::format("delivered {} to {}\n", msg->seq, reader), after);
}

Bytes Engine::takeChunk(Handle& h, size_t size, pid_t reader, After& after) {
  const std::string_view payload = h.current->payload();
  const size_t len = std::min(size, payload.size() - h.offset);
  Bytes chunk = Bytes::slice(h.current, payload, h.offset, len);
  h.offset += len;
  if (h.offset == payload.size()) {
    finishMessage(h, reader, after);
    // The read that returned the last bytes is followed by one returning 0 (end of
    // message); an empty message's end is the 0 this read returns.
    h.atEnd = len > 0;
  } else if (journal_) {
    journalTaken(*h.box, *h.current);  // if the daemon dies now, it comes back
  }
  return chunk;
}

// The receiver read the last byte.
void Engine::finishMessage(Handle& h, pid_t reader, After& after) {
  Mailbox& box = *h.box;
  MessagePtr msg = std::move(h.current);
  detail::eraseName(box, msg.get());
  h.offset = 0;
  finishTaken(box, msg, h, reader, after);
}

void Engine::settleReceipt(const detail::Message& msg, std::string line, After& after) {
  if (msg.senderFh == 0) return;
  Handle* h = handle(msg.senderFh);
  if (!h || h->lastSentUid != msg.uid) return;
  auto& receipts = h->box->receipts;
  for (auto it = receipts.begin(); it != receipts.end(); ++it) {
    if (it->fh != msg.senderFh) continue;
    Waiter w = std::move(*it);
    receipts.erase(it);
    waiterHomes_.erase(w.id);
    h->lastSentUid = 0;
    auto text = std::make_shared<const std::string>(std::move(line));
    after.push_back([done = std::move(w.onRead), chunk = Bytes::slice(text, 0, w.size)] { done(chunk); });
    return;
  }
  h->receipt = std::move(line);
  wakePollers(*h->box, after);  // a poll on the sender's .send now sees it readable
}

std::optional<WaiterId> Engine::parkReceipt(Handle& h, size_t size, ReadCompletion& done, After& after,
                                            WaiterId reuse) {
  if (h.receipt) {
    auto text = std::make_shared<const std::string>(std::move(*h.receipt));
    h.receipt.reset();
    h.lastSentUid = 0;  // returned once; further reads return 0 until the next message
    after.push_back([d = std::move(done), chunk = Bytes::slice(text, 0, size)] { d(chunk); });
    return std::nullopt;
  }
  Waiter w;
  w.kind = WaitKind::Receipt;
  w.id = reuse;
  w.fh = h.fh;
  w.size = size;
  w.onRead = std::move(done);
  return parkWaiter(*h.box, h.box->receipts, std::move(w));
}

void Engine::wakePollers(Mailbox& box, After& after) {
  for (auto& [fh, notify] : box.pollers) after.push_back(std::move(notify));
  box.pollers.clear();
}

// The sender's message entered the mailbox (or a receiver's hands). A receipt read goes
// on waiting, now for the message's fate; its waiter id is returned.
std::optional<WaiterId> Engine::sent(Handle& h, const MessagePtr& msg, StatusCompletion& onStatus,
                                     ReadCompletion& onRead, size_t readSize, After& after, WaiterId reuse) {
  h.lastSentUid = msg->uid;
  h.receipt.reset();
  if (onStatus) after.push_back([done = std::move(onStatus)] { done(Status{}); });
  if (!onRead) return std::nullopt;
  ReadCompletion done = std::move(onRead);
  return parkReceipt(h, readSize, done, after, reuse);
}

// One message of a blocked batch write enters the queue; the write completes with its last.
void Engine::enterFromBatch(Mailbox& box, Waiter& w, After& after) {
  MessagePtr msg = w.batch.front();
  w.batch.pop_front();
  assignSeqAndName(box, *msg);
  enqueueTail(box, msg, after);
  ++w.batchEntered;
}

// Blocked senders enter, in arrival order, while there is room.
void Engine::admitSenders(Mailbox& box, After& after) {
  if (box.remote) return;  // pushed to the backend (serveRemote)
  while (!box.senders.empty() && hasRoom(box)) {
    Waiter& front = box.senders.front();
    if (front.kind == WaitKind::SendBatch) {
      while (!front.batch.empty() && hasRoom(box)) enterFromBatch(box, front, after);
      if (!front.batch.empty()) break;
    }
    Waiter w = std::move(front);
    box.senders.pop_front();
    waiterHomes_.erase(w.id);
    --sendersWaiting_;
    if (w.kind == WaitKind::SendBatch) {
      if (Handle* h = handle(w.fh)) h->draft = std::move(w.leftover);
      after.push_back([done = std::move(w.onWrite), n = w.batchTotal] { done(n); });
      continue;
    }
    assignSeqAndName(box, *w.msg);
    enqueueTail(box, w.msg, after);
    if (Handle* h = handle(w.fh)) sent(*h, w.msg, w.onStatus, w.onRead, w.size, after, w.id);
  }
}

// Hands messages to parked receivers, longest-waiting first, letting blocked senders in
// as room appears. A receiver of procs/P/from/Q is passed over while nothing from Q is
// there. Afterwards no parked receiver could take anything: readers that come later may
// take what is there without queueing behind them.
void Engine::dispatch(Mailbox& box, After& after) {
  admitSenders(box, after);
  while (!box.receivers.empty() && canTake(box)) {
    auto next = std::find_if(box.receivers.begin(), box.receivers.end(),
                             [&](const Waiter& r) { return canTake(box, handle(r.fh)->from); });
    if (next == box.receivers.end()) break;
    Waiter w = std::move(*next);
    box.receivers.erase(next);
    waiterHomes_.erase(w.id);
    --receiversWaiting_;
    Handle* h = handle(w.fh);
    h->parked.reset();
    if (h->batch != detail::Batch::None) {
      after.push_back([done = std::move(w.onRead), r = takeBatch(box, *h, w.size, w.pid, after)] { done(r); });
    } else {
      takeNext(box, *h, w.pid, after);
      after.push_back([done = std::move(w.onRead), chunk = takeChunk(*h, w.size, w.pid, after)] { done(chunk); });
    }
    admitSenders(box, after);
  }
}

Engine::MessagePtr Engine::draftMessage(Handle& h) {
  auto msg = detail::makeMessage(std::move(h.draft));
  msg->uid = nextMessageUid_++;
  msg->senderPid = h.writerPid;
  msg->uid_ = h.writerUid;
  msg->gid = h.writerGid;
  msg->senderFh = h.fh;
  h.draft.clear();
  h.composing = false;
  return msg;
}

// Delivers `msg` from open file `h`: into the queue if there is room, straight to a waiting
// receiver if not, else (unless non-blocking) parks the sender. On failure the message is
// dropped whole. Exactly one of onStatus/onRead (or neither, from release) completes.
std::optional<WaiterId> Engine::send(Handle& h, MessagePtr msg, StatusCompletion onStatus, ReadCompletion onRead,
                                     size_t readSize, After& after) {
  Mailbox& box = *h.box;
  auto refuse = [&](int err) -> std::optional<WaiterId> {
    // Refused to a caller, nothing was queued; refused at release, it is lost: discarded.
    const bool nobodyToTell = !onStatus && !onRead;
    releaseBytes(msg->size());
    if (msg->state == MessageState::Composing) {  // a drop-in: its name is free again
      detail::eraseName(box, msg.get());
      messages_->erase(msg.get());
    }
    if (onStatus) after.push_back([done = std::move(onStatus), err] { done(fail(err)); });
    if (onRead) after.push_back([done = std::move(onRead), err] { done(fail(err)); });
    if (nobodyToTell) ++discarded_;
    return std::nullopt;
  };
  if (box.removed) return refuse(EIDRM);
  if (box.remote) {
    // Pushed to the backend, which answers (serveRemote); a close with nobody to tell (release)
    // does not wait for room.
    if (msg->holdsPlace) {
      msg->holdsPlace = false;
      --box.reserved;
    }
    Waiter w;
    w.kind = WaitKind::Send;
    w.fh = h.fh;
    w.size = readSize;
    w.nonblock = h.nonblock || (!onStatus && !onRead);
    w.msg = std::move(msg);
    w.onStatus = std::move(onStatus);
    w.onRead = std::move(onRead);
    const WaiterId id = parkWaiter(box, box.senders, std::move(w));
    serveRemoteHere(h.box, after);
    return id;
  }

  if (msg->holdsPlace || (box.senders.empty() && hasRoom(box))) {
    if (msg->holdsPlace) {
      msg->holdsPlace = false;
      --box.reserved;
    }
    assignSeqAndName(box, *msg);
    enqueueTail(box, msg, after);
    auto receiptWaiter = sent(h, msg, onStatus, onRead, readSize, after);
    dispatch(box, after);
    return receiptWaiter;
  }
  if (box.senders.empty() && !box.receivers.empty()) {
    // Full (or capacity 0) but a receiver waits (so the queue is empty): it takes the
    // message from our hands. Queued for no longer than this call, under the lock.
    assignSeqAndName(box, *msg);
    enqueueTail(box, msg, after);
    auto receiptWaiter = sent(h, msg, onStatus, onRead, readSize, after);
    dispatch(box, after);
    return receiptWaiter;
  }
  if (h.nonblock || (!onStatus && !onRead)) return refuse(EAGAIN);
  Waiter w;
  w.kind = WaitKind::Send;
  w.fh = h.fh;
  w.size = readSize;
  w.msg = std::move(msg);
  w.onStatus = std::move(onStatus);
  w.onRead = std::move(onRead);
  const WaiterId id = parkWaiter(box, box.senders, std::move(w));
  wakePollers(box, after);  // a rendezvous sender makes .receive readable
  return id;
}

}  // namespace ipcfs
