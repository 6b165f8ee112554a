// Open files: opening, reading (receiving, peeking), writing (sending), closing, polling,
// and the waiters that blocked reads become.
#include <fcntl.h>
#include <poll.h>

#include <algorithm>
#include <cerrno>

#include <fmt/format.h>

#include "clock.hpp"
#include "ipcfs/engine.hpp"
#include "ipcfs/inode.hpp"
#include "names.hpp"
#include "objects.hpp"

namespace ipcfs {

using detail::failWaiter;
using detail::Handle;
using detail::HandleKind;
using detail::Mailbox;
using detail::Message;
using detail::MessageState;
using detail::Policy;
using detail::WaitKind;
using detail::Waiter;

Handle* Engine::handle(uint64_t fh) {
  auto it = handles_.find(fh);
  return it == handles_.end() ? nullptr : it->second.get();
}

uint64_t Engine::addHandle(std::unique_ptr<Handle> h) {
  const uint64_t fh = nextHandle_++;
  h->fh = fh;
  if (h->kind == HandleKind::Snapshot) ++snapshotHandles_;
  handles_.emplace(fh, std::move(h));
  return fh;
}

namespace {

std::unique_ptr<Handle> makeHandle(HandleKind kind, std::shared_ptr<Mailbox> box) {
  auto h = std::make_unique<Handle>();
  h->kind = kind;
  h->box = std::move(box);
  return h;
}

std::unique_ptr<Handle> snapshotHandle(std::string text) {
  auto h = makeHandle(HandleKind::Snapshot, nullptr);
  auto bytes = std::make_shared<const std::string>(std::move(text));
  h->snapshot = Bytes::slice(bytes, 0, bytes->size());
  return h;
}

}  // namespace

// REQUIRES: mutex_ held.
void Engine::dropDeadPairMembers(Mailbox& box) const {
  std::erase_if(box.pair, [&](const detail::BoundProcess& b) { return processes_->instance(b.pid) != b.instance; });
}

// Who may open .send / .receive under the mailbox's policy. REQUIRES: mutex_ held.
Status Engine::checkPolicy(Mailbox& box, pid_t pid, bool receiving) {
  if (box.policy == Policy::Exclusive && receiving) {
    for (const auto& [opener, count] : box.receiverOpens)
      if (opener != pid && count > 0) return fail(EBUSY);
  }
  if (box.policy == Policy::Pair) {
    for (const auto& b : box.pair)
      if (b.pid == pid) return {};
    if (box.pair.size() >= 2) dropDeadPairMembers(box);
    if (box.pair.size() >= 2) return fail(EPERM);
    auto start = processes_->instance(pid);
    box.pair.push_back({pid, start.value_or(0)});
  }
  return {};
}

Result<Opened> Engine::open(uint64_t ino, int flags, const Caller& who) {
  if (ino == ino::kRootStatus) reapExited();  // counts what exited processes left behind
  if (backend_ && (ino::kindOf(ino) == ino::Kind::Status || ino::kindOf(ino) == ino::Kind::Message)) {
    if (auto fresh = refreshRemote(ino); !fresh) return fail(fresh.error());  // .status, a peek
  }
  if (backend_) {
    if (auto held = holdRemote(ino, who.pid); !held) return fail(held.error());  // exclusive
  }
  std::lock_guard lock(mutex_);
  const int access = flags & O_ACCMODE;
  const bool readOnly = access == O_RDONLY;
  const bool nonblock = (flags & O_NONBLOCK) != 0;
  Opened opened;
  switch (ino::kindOf(ino)) {
    case ino::Kind::Send:
    case ino::Kind::Receive:
    case ino::Kind::Status:
    case ino::Kind::SendLines:
    case ino::Kind::ReceiveLines:
    case ino::Kind::SendFrames:
    case ino::Kind::ReceiveFrames: {
      auto box = mailboxById(ino::idOf(ino));
      if (!box) return fail(ENOENT);
      auto kind = ino::kindOf(ino);
      detail::Batch batch = detail::Batch::None;
      if (kind == ino::Kind::SendLines || kind == ino::Kind::ReceiveLines) batch = detail::Batch::Lines;
      if (kind == ino::Kind::SendFrames || kind == ino::Kind::ReceiveFrames) batch = detail::Batch::Frames;
      if (kind == ino::Kind::SendLines || kind == ino::Kind::SendFrames) kind = ino::Kind::Send;
      if (kind == ino::Kind::ReceiveLines || kind == ino::Kind::ReceiveFrames) kind = ino::Kind::Receive;
      if (auto ok = checkInboxAccess(*box, who, kind == ino::Kind::Send); !ok) return fail(ok.error());
      if (kind == ino::Kind::Send) {
        if (readOnly) return fail(EACCES);  // .send is for writing
        if (auto ok = checkPolicy(*box, who.pid, false); !ok) return fail(ok.error());
        auto h = makeHandle(HandleKind::Sender, box);
        h->batch = batch;
        h->nonblock = nonblock;
        h->readsReceipts = access == O_RDWR;
        h->openerPid = who.pid;
        opened.fh = addHandle(std::move(h));
        opened.nonseekable = true;
      } else if (kind == ino::Kind::Receive) {
        if (!readOnly) return fail(EACCES);  // .receive is for reading
        if (auto ok = checkPolicy(*box, who.pid, true); !ok) return fail(ok.error());
        auto h = makeHandle(HandleKind::Receiver, box);
        h->batch = batch;
        h->nonblock = nonblock;
        h->openerPid = who.pid;
        ++box->receiverOpens[who.pid];
        opened.fh = addHandle(std::move(h));
        opened.nonseekable = true;
      } else {
        if (!readOnly) return fail(EACCES);
        opened.fh = addHandle(snapshotHandle(renderMailboxStatus(*box)));
      }
      return opened;
    }
    case ino::Kind::Fixed:
      if (ino == ino::kRootStatus || ino == ino::kRootMetrics) {
        if (!readOnly) return fail(EACCES);
        opened.fh = addHandle(snapshotHandle(ino == ino::kRootStatus ? renderRootStatus() : renderMetrics()));
        return opened;
      }
      return fail(EISDIR);
    case ino::Kind::Message: {
      Message* found = messages_->find(ino::idOf(ino));
      if (!found) return fail(ENOENT);
      if (!readOnly || (flags & O_TRUNC)) return fail(EACCES);  // queued contents are immutable
      const Message& msg = *found;
      auto h = makeHandle(HandleKind::Snapshot, nullptr);
      auto copy = std::make_shared<const std::string>(msg.payload());
      h->snapshot = Bytes::slice(copy, 0, copy->size());
      if (msg.state == MessageState::Queued) {  // immutable from now on: the page cache may keep it
        opened.directIo = false;
        opened.keepCache = true;
      }
      opened.fh = addHandle(std::move(h));
      return opened;
    }
    case ino::Kind::Segment:
    case ino::Kind::Semaphore:
      return openShmSem(ino, flags);
    case ino::Kind::Pipe:
      return openPipe(ino, flags);
    case ino::Kind::From: {
      // procs/P/from/Q: .receive restricted to what Q (or its descendants) sent.
      auto box = mailboxById(ino::inboxOfFrom(ino::idOf(ino)));
      if (!box || box->owner == 0) return fail(ENOENT);
      if (auto ok = checkInboxAccess(*box, who, false); !ok) return fail(ok.error());
      if (!readOnly) return fail(EACCES);
      if (auto ok = checkPolicy(*box, who.pid, true); !ok) return fail(ok.error());
      auto h = makeHandle(HandleKind::Receiver, box);
      h->from = static_cast<pid_t>(ino::pidOfFrom(ino::idOf(ino)));
      h->nonblock = nonblock;
      h->openerPid = who.pid;
      ++box->receiverOpens[who.pid];
      opened.fh = addHandle(std::move(h));
      opened.nonseekable = true;
      return opened;
    }
    case ino::Kind::Mailbox:
    case ino::Kind::Inbox:
    case ino::Kind::FromDir:
      return fail(EISDIR);
    default:
      return fail(EINVAL);
  }
}

// REQUIRES: mutex_ held; the mailbox has room (or capacity 0).
Result<std::pair<struct stat, Opened>> Engine::createNow(Mailbox& box, std::string_view name, int flags,
                                                         const Caller& who, bool takePlace) {
  if (box.removed) return fail(EIDRM);
  if (detail::findByName(box, name)) return fail((flags & O_EXCL) ? EEXIST : EACCES);
  auto msg = detail::makeMessage(std::string_view{});
  msg->uid = nextMessageUid_++;
  msg->setName(std::string(name));
  msg->body();  // written in place until delivered
  msg->senderPid = who.pid;
  msg->uid_ = who.uid;
  msg->gid = who.gid;
  msg->setTimes(now());
  // The create takes a place in the queue when there is one; at capacity 0 there are
  // none: its delivery is a rendezvous instead.
  if (takePlace) {
    msg->holdsPlace = true;
    ++box.reserved;
  }
  detail::addName(box, msg.get());
  messages_->insert(msg.get());

  auto h = makeHandle(HandleKind::DropIn, mailboxById(box.id));
  h->dropIn = msg;
  h->nonblock = (flags & O_NONBLOCK) != 0;
  Opened opened;
  opened.fh = addHandle(std::move(h));
  return std::pair{messageStat(*msg), opened};
}

Result<std::pair<struct stat, Opened>> Engine::create(uint64_t parent, std::string_view name, mode_t mode, int flags,
                                                      const Caller& who) {
  if (backend_ && parent == ino::kSem) return createRemoteSemaphore(name, mode, flags, who);
  if (backend_ && ino::kindOf(parent) == ino::Kind::Mailbox) {
    if (auto fresh = refreshRemoteSettings(ino::idOf(parent)); !fresh) return fail(fresh.error());  // max_msg_size now
  }
  auto result = createUncommitted(parent, name, mode, flags, who);
  After none;
  commitSync(none);
  return result;
}

Result<std::pair<struct stat, Opened>> Engine::createUncommitted(uint64_t parent, std::string_view name, mode_t mode,
                                                                 int flags, const Caller& who) {
  std::lock_guard lock(mutex_);
  if (parent == ino::kShm || parent == ino::kSem) return createShmSem(parent, name, mode, flags, who);
  if (isPipesDir(parent)) return createPipe(parent, name, mode, flags, who);
  // (messages are 0444 whatever `mode` says; chmod works afterwards)
  auto box = mailboxByIno(parent);
  if (!box) return fail(statOf(parent) ? EPERM : ENOENT);
  if (auto ok = validateName(name); !ok) return fail(ok.error());
  if (auto ok = checkInboxAccess(*box, who, true); !ok) return fail(ok.error());
  if (box->owner != 0 && name == "from") return fail(EEXIST);
  if (detail::findByName(*box, name)) return fail((flags & O_EXCL) ? EEXIST : EACCES);
  if (box->capacity == 0 || (box->senders.empty() && hasRoom(*box))) return createNow(*box, name, flags, who, box->capacity != 0);
  if (flags & O_NONBLOCK) return fail(EAGAIN);
  // Full: the kernel holds the mailbox directory's lock for the whole CREATE, so a create
  // parked here would freeze every lookup in the mailbox, including the receiver's open
  // of .receive that would make room (a deadlock). The file is made at once without a
  // place, and its delivery at close waits for room, as .send's does.
  return createNow(*box, name, flags, who, false);
}

std::optional<WaiterId> Engine::read(uint64_t fh, size_t size, off_t offset, bool nonblock, pid_t reader,
                                     ReadCompletion done) {
  if (backend_) {
    {
      std::lock_guard lock(mutex_);
      Handle* h = handle(fh);
      // A plain reader asks for a message's end while the acknowledgement is on its way: the
      // thread acknowledging answers it once done, with no thread waiting meanwhile.
      if (h && h->confirming && h->atEnd && h->batch == detail::Batch::None && !h->afterConfirm) {
        h->afterConfirm = [this, fh, size, offset, nonblock, reader, done = std::move(done)]() mutable {
          (void)read(fh, size, offset, nonblock, reader, std::move(done));  // the end: never parks
        };
        return std::nullopt;
      }
    }
    if (auto confirmed = confirmRemoteNow(fh); !confirmed) {
      done(fail(confirmed.error()));
      return std::nullopt;
    }
  }
  Result<Bytes> result = Bytes::empty();
  After after;
  std::optional<WaiterId> parked;
  {
    std::lock_guard lock(mutex_);
    Handle* h = handle(fh);
    if (h) {
      h->nonblock = nonblock;
      h->readTick = remoteTickNo_;
    }
    if (h && !h->unconfirmed.empty()) confirmTaken(*h);  // the reader got what it read
    if (!h) {
      result = fail(EBADF);
    } else if (h->kind == HandleKind::Segment || h->kind == HandleKind::Semaphore) {
      parked = readShmSem(*h, size, offset, nonblock, done, after);
      done = nullptr;
    } else if (h->kind == HandleKind::PipeEnd) {
      parked = readPipe(*h, size, nonblock, done, after);
      done = nullptr;
    } else if (h->kind == HandleKind::Snapshot) {
      result = Bytes::slice(h->snapshot.owner, h->snapshot.view, static_cast<size_t>(offset), size);
    } else if (h->kind == HandleKind::DropIn) {
      result = Bytes::slice(std::make_shared<const std::string>(h->dropIn->payload()), static_cast<size_t>(offset),
                            size);
    } else if (h->kind == HandleKind::Sender) {
      // Receipts: deliver what was written, then wait for its fate; O_NONBLOCK: EAGAIN
      // while the fate is unknown (the message is sent all the same).
      if (h->batch != detail::Batch::None) {
        // Batch nodes have no receipts: nothing to report.
        after.push_back([d = std::move(done)] { d(Bytes::empty()); });
      } else if (h->lastSentUid != 0 && !h->composing && !h->receipt && h->box->removed) {
        after.push_back([d = std::move(done)] { d(fail(EIDRM)); });  // no fate will come now
      } else if (h->composing && nonblock) {
        parked = send(*h, draftMessage(*h), [d = std::move(done)](Status s) { d(fail(s ? EAGAIN : static_cast<int>(s.error()))); }, {}, 0, after);
      } else if (h->composing) {
        parked = send(*h, draftMessage(*h), {}, std::move(done), size, after);
      } else if (h->lastSentUid != 0 && nonblock && !h->receipt) {
        after.push_back([d = std::move(done)] { d(fail(EAGAIN)); });
      } else if (h->lastSentUid != 0) {
        parked = parkReceipt(*h, size, done, after);
      } else {
        after.push_back([d = std::move(done)] { d(Bytes::empty()); });
      }
      done = nullptr;
    } else if (h->batch != detail::Batch::None && !h->box->removed && !shutDown_ && canTake(*h->box)) {
      // (dispatch() leaves no parked receiver that could take: nobody is overtaken)
      result = takeBatch(*h->box, *h, size, reader, after);
      dispatch(*h->box, after);  // taking made room for blocked senders
    } else if (h->current) {
      result = takeChunk(*h, size, reader, after);
    } else if (h->atEnd) {
      h->atEnd = false;
      result = Bytes::empty();  // end of message
    } else if (shutDown_) {
      result = fail(ESHUTDOWN);
    } else if (h->box->removed) {
      result = fail(EIDRM);
    } else if (canTake(*h->box, h->from)) {
      takeNext(*h->box, *h, reader, after);
      result = takeChunk(*h, size, reader, after);
      dispatch(*h->box, after);  // taking made room for blocked senders
    } else if (nonblock && !h->box->remote) {
      result = fail(EAGAIN);
    } else {
      // A shared mailbox's messages are claimed from the backend (by this thread, once
      // unlocked); an O_NONBLOCK read waits only for the claim's answer.
      Waiter w;
      w.kind = WaitKind::Receive;
      w.fh = fh;
      w.size = size;
      w.pid = reader;
      w.nonblock = nonblock;
      w.onRead = std::move(done);
      done = nullptr;
      parked = parkWaiter(*h->box, h->box->receivers, std::move(w));
      h->parked = parked;
      if (h->box->remote) serveRemoteHere(h->box, after);
    }
  }
  finishCall(done, std::move(result), after);
  return parked;
}

std::optional<WaiterId> Engine::write(uint64_t fh, std::string_view data, off_t offset, bool nonblock,
                                      const Caller& who, WriteCompletion done) {
  if (backend_) {
    if (auto posted = postRemoteSemaphore(fh, data)) {
      done(std::move(*posted));
      return std::nullopt;
    }
  }
  After after;
  Result<size_t> result = fail(EBADF);
  std::optional<WaiterId> parked;
  {
    std::lock_guard lock(mutex_);
    if (Handle* h = handle(fh)) {
      h->nonblock = nonblock;
      if (h->kind == HandleKind::Sender && h->batch != detail::Batch::None) {
        parked = writeBatch(*h, data, nonblock, who, done, after);
        done = nullptr;
      } else if (h->kind == HandleKind::PipeEnd) {
        parked = writePipe(*h, data, nonblock, done, after);
        done = nullptr;
      } else {
        result = writeNow(*h, data, offset, nonblock, who, after);
      }
    }
  }
  finishCall(done, std::move(result), after);
  return parked;
}

// REQUIRES: mutex_ held. Writes that never wait.
Result<size_t> Engine::writeNow(Handle& handleRef, std::string_view data, off_t offset, bool nonblock,
                                const Caller& who, After& after) {
  Handle* h = &handleRef;
  if (h->kind == HandleKind::Segment || h->kind == HandleKind::Semaphore) return writeShmSem(*h, data, offset, after);
  if (data.empty()) return 0;  // writes nothing, starts no message
  if (h->kind == HandleKind::Sender) {
    if (h->box->removed) return fail(EIDRM);
    // An over-long or unaffordable message is dropped whole; the next write starts anew.
    auto dropDraft = [&](int err) {
      releaseBytes(h->draft.size());
      h->draft.clear();
      h->composing = false;
      return fail(err);
    };
    if (h->draft.size() + data.size() > h->box->maxMsgSize) return dropDraft(EFBIG);
    // Non-blocking and no way in: say so now rather than at close.
    if (nonblock && !hasRoom(*h->box) && h->box->receivers.empty()) return dropDraft(EAGAIN);
    if (auto r = reserveBytes(data.size()); !r) return dropDraft(ENOSPC);
    if (!h->composing) {
      h->composing = true;
      h->writerPid = who.pid;
      h->writerUid = who.uid;
      h->writerGid = who.gid;
    }
    h->draft.append(data);
    return data.size();
  }
  if (h->kind == HandleKind::DropIn) {
    if (h->delivered) return fail(EACCES);  // queued contents are immutable
    if (h->discarded) return data.size();    // like writing to an unlinked file
    std::string& buf = h->dropIn->body();
    const uint64_t end = static_cast<uint64_t>(offset) + data.size();
    // Like .send: a message that cannot be whole is dropped whole; the next write starts
    // anew, and a close with nothing written since sends nothing (not an empty message).
    auto dropDraft = [&](int err) {
      releaseBytes(buf.size());
      buf.clear();
      h->written = false;
      h->dropped = true;
      return fail(err);
    };
    if (end > h->box->maxMsgSize) return dropDraft(EFBIG);
    if (end > buf.size()) {
      if (auto r = reserveBytes(end - buf.size()); !r) return dropDraft(ENOSPC);
      buf.resize(end);
    }
    buf.replace(static_cast<size_t>(offset), data.size(), data);
    h->written = true;
    const timespec t = now();
    h->dropIn->setTimes(h->dropIn->atime(), t, t);
    return data.size();
  }
  return fail(EBADF);
}

std::optional<WaiterId> Engine::flush(uint64_t fh, StatusCompletion done, bool closerKilled) {
  After after;
  std::optional<WaiterId> parked;
  std::optional<SegmentSave> save;  // durable mode: shm/ contents to write first
  StatusCompletion saved;
  {
    std::lock_guard lock(mutex_);
    Handle* h = handle(fh);
    if (!h) {
      after.push_back([d = std::move(done)] { d(fail(EBADF)); });
    } else if (closerKilled && (h->kind == HandleKind::Sender || h->kind == HandleKind::DropIn)) {
      // Closed by the exit of a process killed by a signal: its close() never ran, so what
      // it was writing was never sent. Nothing partial is delivered.
      if (h->kind == HandleKind::Sender) {
        releaseBytes(h->draft.size());
        h->draft.clear();
        h->composing = false;
      } else if (!h->delivered && !h->discarded) {
        h->delivered = true;
        abandonDropIn(*h, after);
      }
      after.push_back([d = std::move(done)] { d(Status{}); });
    } else if (h->kind == HandleKind::Sender && h->batch != detail::Batch::None) {
      parked = flushBatch(*h, std::move(done), after);
    } else if (h->kind == HandleKind::Sender && h->composing) {
      parked = send(*h, draftMessage(*h), std::move(done), {}, 0, after);
    } else if (h->kind == HandleKind::DropIn && h->written && !h->delivered && !h->discarded) {
      h->delivered = true;
      parked = send(*h, h->dropIn, std::move(done), {}, 0, after);
    } else if (journal_ && h->kind == HandleKind::Segment && (save = segmentToSave(h->segment))) {
      saved = std::move(done);
    } else {
      after.push_back([d = std::move(done)] { d(Status{}); });
    }
  }
  if (save) after.push_back([d = std::move(saved), s = saveSegment(*save)] { d(s); });
  commit(after);
  return parked;
}

std::optional<WaiterId> Engine::fsync(uint64_t fh, StatusCompletion done) { return flush(fh, std::move(done)); }

// REQUIRES: mutex_ held. A drop-in that will never be delivered gives back its name and place.
void Engine::abandonDropIn(Handle& h, After& after) {
  Mailbox& box = *h.box;
  const MessagePtr& msg = h.dropIn;
  detail::eraseName(box, msg.get());
  messages_->erase(msg.get());
  releaseBytes(msg->size());
  if (msg->holdsPlace) {
    msg->holdsPlace = false;
    --box.reserved;
    dispatch(box, after);
  }
}

// REQUIRES: mutex_ held. A drop-in that will never be queued and that nothing holds any more
// (its file released, no longer waiting to enter) leaves the indexes, which do not own it.
// `releasing`: the drop-in's own handle, being released.
void Engine::forgetIfOrphan(Mailbox& box, const MessagePtr& msg, const Handle* releasing) {
  if (!msg || msg->state != MessageState::Composing) return;
  for (const auto& w : box.senders)
    if (w.msg == msg) return;
  if (!releasing) {
    for (const auto& [fh, h] : handles_)
      if (h->dropIn == msg) return;
  }
  detail::eraseName(box, msg.get());
  messages_->erase(msg.get());
}

void Engine::release(uint64_t fh) {
  After after;
  std::optional<SegmentSave> save;
  {
    std::lock_guard lock(mutex_);
    auto it = handles_.find(fh);
    if (it == handles_.end()) return;
    Handle& h = *it->second;
    switch (h.kind) {
      case HandleKind::Sender:
        h.box->pollers.erase(fh);
        std::erase_if(remoteReceipts_, [&](const auto& r) { return r.second->senderFh == fh; });
        // Written but never flushed (rare: FLUSH precedes RELEASE): delivered if it fits now.
        if (h.batch != detail::Batch::None)
          (void)flushBatch(h, {}, after);
        else if (h.composing)
          (void)send(h, draftMessage(h), {}, {}, 0, after);
        break;
      case HandleKind::DropIn:
        if (!h.delivered && !h.discarded) {
          h.delivered = true;
          // Never written: delivered as an empty message when its last descriptor closes;
          // its only content dropped by a failed write: nothing to send.
          if (h.written || !h.dropped)
            (void)send(h, h.dropIn, {}, {}, 0, after);
          else
            abandonDropIn(h, after);
        }
        forgetIfOrphan(*h.box, h.dropIn, &h);
        break;
      case HandleKind::Receiver: {
        Mailbox& box = *h.box;
        box.pollers.erase(fh);
        if (!h.unconfirmed.empty()) confirmTaken(h);
        if (h.parked) {
          // The kernel never releases a file with a read in flight; an engine user might.
          auto w = std::find_if(box.receivers.begin(), box.receivers.end(),
                                [&](const Waiter& x) { return x.id == *h.parked; });
          if (w != box.receivers.end()) {
            waiterHomes_.erase(w->id);
            --receiversWaiting_;
            after.push_back(failWaiter(*w, EBADF));
            box.receivers.erase(w);
          }
        }
        if (box.remote && !box.queue.empty()) requestWake(box);  // its leftovers go back
        if (auto n = box.receiverOpens.find(h.openerPid); n != box.receiverOpens.end() && --n->second <= 0) {
          box.receiverOpens.erase(n);
          if (box.remote && box.policy == detail::Policy::Exclusive)
            queueRemote({RemoteJob::Kind::Unhold, box.id, 0, h.openerPid});  // another host may now
        }
        if (h.current && box.removed) {
          // Half-read from the inbox of a process that has exited since: nobody is left to
          // receive it.
          MessagePtr msg = std::move(h.current);
          releaseBytes(msg->size());
          settleReceipt(*msg, fmt::format("discarded {}\n", msg->seq), after);
          ++discarded_;
          if (box.owner != 0) ++inboxDiscarded_;
        } else if (h.current) {
          // Closed (or died) mid-message: back to the head, counted.
          MessagePtr msg = std::move(h.current);
          detail::eraseName(box, msg.get());
          msg->redelivered();
          msg->takenJournaled = false;
          ++box.redelivered;
          ++messagesRedelivered_;
          requeueHead(box, msg, after);
          dispatch(box, after);
          if (box.remote) requestWake(box);  // nobody here took it: it goes back
        }
        break;
      }
      case HandleKind::Segment:
      case HandleKind::Semaphore:
        if (journal_ && h.segment) save = segmentToSave(h.segment);
        releaseShmSem(h);
        break;
      case HandleKind::PipeEnd:
        releasePipe(h, after);
        break;
      case HandleKind::Snapshot:
        --snapshotHandles_;
        break;
    }
    handles_.erase(fh);
  }
  if (save) (void)saveSegment(*save);  // nobody to tell if it fails: the next flush tries again
  commit(after);
}

Result<unsigned> Engine::poll(uint64_t fh, PollNotify notify) {
  auto ready = pollHere(fh, std::move(notify));
  // Shared objects: asked after the notification is registered, so that an event announcing
  // a message or a post in between is not lost (the backend announces a message only when
  // the queue was empty).
  constexpr unsigned kIn = POLLIN | POLLRDNORM;
  if (ready && !(*ready & kIn) && backend_ && remoteReadable(fh).value_or(false)) *ready |= kIn;
  return ready;
}

Result<unsigned> Engine::pollHere(uint64_t fh, PollNotify notify) {
  constexpr unsigned kIn = POLLIN | POLLRDNORM, kOut = POLLOUT | POLLWRNORM;
  std::lock_guard lock(mutex_);
  Handle* h = handle(fh);
  if (!h) return fail(EBADF);
  // Notifications are kept even when ready: edge-triggered epoll polls again only after
  // one, so the next change must be able to send it.
  if (h->kind == HandleKind::PipeEnd) return pollPipe(*h, notify);
  if (h->kind == HandleKind::Semaphore) {
    if (notify) h->semaphore->pollers[fh] = std::move(notify);
    return (h->semaphore->value > 0 || shutDown_ ? kIn : 0u) | kOut;
  }
  if (h->kind == HandleKind::Sender && h->readsReceipts) {
    // Readable when a read would not wait: a receipt is known, or nothing was sent.
    const bool readable = h->receipt || (h->lastSentUid == 0 && !h->composing) || h->box->removed || shutDown_;
    if (notify) h->box->pollers[fh] = std::move(notify);
    return (readable ? kIn : 0u) | kOut;
  }
  if (h->kind != HandleKind::Receiver) return kIn | kOut;
  Mailbox& box = *h->box;
  const bool readable = h->current || h->atEnd || canTake(box, h->from) || box.removed || shutDown_;
  if (notify) box.pollers[fh] = std::move(notify);
  return readable ? kIn : 0u;
}


void Engine::cancel(WaiterId id) {
  After after;
  {
    std::lock_guard lock(mutex_);
    if (!cancelSemWaiter(id, after) && !cancelPipeWaiter(id, after)) cancelMailboxWaiter(id, after);
  }
  // A batch write cut short is answered with what entered, in earlier calls.
  commitAll(after);
}

// REQUIRES: mutex_ held.
void Engine::cancelMailboxWaiter(WaiterId id, After& after) {
  auto home = waiterHomes_.find(id);
  if (home == waiterHomes_.end()) return;
  Mailbox& box = *home->second;
  waiterHomes_.erase(home);
  for (auto* list : {&box.receivers, &box.senders, &box.receipts}) {
    auto it = std::find_if(list->begin(), list->end(), [&](const Waiter& w) { return w.id == id; });
    if (it == list->end()) continue;
    Waiter w = std::move(*it);
    list->erase(it);
    if (w.kind == WaitKind::Receive) {
      --receiversWaiting_;
      if (Handle* h = handle(w.fh)) h->parked.reset();
    }
    if (w.kind == WaitKind::Send || w.kind == WaitKind::SendBatch) --sendersWaiting_;
    if (w.kind == WaitKind::SendBatch) {
      // Interrupted midway: a short write of what entered; the rest is not queued.
      for (const auto& m : w.batch) releaseBytes(m->size());
      if (w.batchEntered > 0) {
        after.push_back([d = std::move(w.onWrite), n = w.batchEnds[w.batchEntered - 1]] { d(n); });
        dispatch(box, after);
        return;
      }
    }
    if (w.kind == WaitKind::Send) {
      // An interrupted sender's message is not queued.
      releaseBytes(w.msg->size());
      if (w.msg->state == MessageState::Composing) {
        detail::eraseName(box, w.msg.get());
        messages_->erase(w.msg.get());
      }
    }
    after.push_back(failWaiter(w, EINTR));
    if (w.kind != WaitKind::Receive && w.kind != WaitKind::Receipt) dispatch(box, after);  // those behind move up
    return;
  }
}

void Engine::shutdown() {
  After after;
  {
    std::lock_guard lock(mutex_);
    shutDown_ = true;
    for (auto* boxes : {&mailboxesById_, &inboxesById_}) {
      for (auto& [id, box] : *boxes) {
        std::vector<MessagePtr> dropped;
        for (auto* list : {&box->receivers, &box->senders, &box->receipts}) {
          for (auto& w : *list) {
            if (w.msg) dropped.push_back(w.msg);
            after.push_back(failWaiter(w, ESHUTDOWN));
          }
          list->clear();
        }
        for (const auto& msg : dropped) forgetIfOrphan(*box, msg, nullptr);
        box->pollers.clear();
      }
    }
    shutdownShmSem(after);
    shutdownPipes(after);
    waiterHomes_.clear();
    receiversWaiting_ = 0;
    sendersWaiting_ = 0;
  }
  run(after);
}

}  // namespace ipcfs
