// Open files: opening, reading (receiving, peeking), writing (sending), closing, polling,
// and the waiters that blocked reads become.
#include <fcntl.h>

#include <cerrno>

#include "clock.hpp"
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

Engine::Engine(Limits limits) : limits_(limits) {}
Engine::~Engine() = default;

Handle* Engine::handle(uint64_t fh) {
  auto it = handles_.find(fh);
  return it == handles_.end() ? nullptr : it->second.get();
}

uint64_t Engine::addHandle(std::unique_ptr<Handle> h) {
  const uint64_t fh = nextHandle_++;
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
  h->snapshot = std::make_shared<const std::string>(std::move(text));
  return h;
}

}  // namespace

Result<Opened> Engine::open(uint64_t ino, int flags, const Caller& who) {
  (void)who;
  std::lock_guard lock(mutex_);
  const int access = flags & O_ACCMODE;
  const bool readOnly = access == O_RDONLY;
  Opened opened;
  switch (ino::kindOf(ino)) {
    case ino::Kind::Send:
    case ino::Kind::Receive:
    case ino::Kind::Status: {
      auto box = mailboxById(ino::idOf(ino));
      if (!box) return fail(ENOENT);
      const auto kind = ino::kindOf(ino);
      if (kind == ino::Kind::Send) {
        if (readOnly) return fail(EACCES);  // .send is for writing
        opened.fh = addHandle(makeHandle(HandleKind::Sender, box));
        opened.nonseekable = true;
      } else if (kind == ino::Kind::Receive) {
        if (!readOnly) return fail(EACCES);  // .receive is for reading
        opened.fh = addHandle(makeHandle(HandleKind::Receiver, box));
        opened.nonseekable = true;
      } else {
        if (!readOnly) return fail(EACCES);
        opened.fh = addHandle(snapshotHandle(renderMailboxStatus(*box)));
      }
      return opened;
    }
    case ino::Kind::Fixed:
      if (ino == ino::kRootStatus) {
        if (!readOnly) return fail(EACCES);
        opened.fh = addHandle(snapshotHandle(renderRootStatus()));
        return opened;
      }
      return fail(EISDIR);
    case ino::Kind::Message: {
      auto it = messages_.find(ino::idOf(ino));
      if (it == messages_.end()) return fail(ENOENT);
      if (!readOnly || (flags & O_TRUNC)) return fail(EACCES);  // queued contents are immutable
      const Message& msg = *it->second;
      auto h = makeHandle(HandleKind::Snapshot, nullptr);
      if (msg.state == MessageState::Queued) {
        h->snapshot = msg.payload;  // immutable from now on: the page cache may keep it
        opened.directIo = false;
        opened.keepCache = true;
      } else {
        h->snapshot = std::make_shared<const std::string>(*msg.payload);
      }
      opened.fh = addHandle(std::move(h));
      return opened;
    }
    case ino::Kind::Mailbox:
      return fail(EISDIR);
    default:
      return fail(EINVAL);
  }
}

Result<std::pair<struct stat, Opened>> Engine::create(uint64_t parent, std::string_view name, mode_t mode,
                                                      int flags, const Caller& who) {
  (void)mode;  // messages are 0444; chmod works afterwards
  std::lock_guard lock(mutex_);
  auto box = mailboxByIno(parent);
  if (!box) return fail(statOf(parent) ? EPERM : ENOENT);
  if (auto ok = validateName(name); !ok) return fail(ok.error());
  if (box->byName.contains(std::string(name))) return fail((flags & O_EXCL) ? EEXIST : EACCES);

  auto msg = std::make_shared<Message>();
  msg->uid = nextMessageUid_++;
  msg->name = std::string(name);
  msg->senderPid = who.pid;
  msg->uid_ = who.uid;
  msg->gid = who.gid;
  msg->atime = msg->mtime = msg->ctime = now();
  box->byName.emplace(msg->name, msg);
  messages_.emplace(msg->uid, msg);

  auto h = makeHandle(HandleKind::DropIn, box);
  h->dropIn = msg;
  Opened opened;
  opened.fh = addHandle(std::move(h));
  return std::pair{messageStat(*msg), opened};
}

std::optional<WaiterId> Engine::read(uint64_t fh, size_t size, off_t offset, bool nonblock, ReadCompletion done) {
  Result<Bytes> result = Bytes::empty();
  After after;
  {
    std::lock_guard lock(mutex_);
    Handle* h = handle(fh);
    if (!h) {
      result = fail(EBADF);
    } else if (h->kind == HandleKind::Snapshot) {
      result = Bytes::slice(h->snapshot, static_cast<size_t>(offset), size);
    } else if (h->kind == HandleKind::DropIn) {
      result = Bytes::slice(std::make_shared<const std::string>(*h->dropIn->payload), static_cast<size_t>(offset),
                            size);
    } else if (h->kind == HandleKind::Sender) {
      result = Bytes::empty();
    } else if (h->current) {
      result = takeChunk(*h, size);
    } else if (h->atEnd) {
      h->atEnd = false;
      result = Bytes::empty();  // end of message
    } else if (shutDown_) {
      result = fail(ESHUTDOWN);
    } else if (h->box->removed) {
      result = fail(EIDRM);
    } else if (!h->box->queue.empty()) {
      takeHead(*h->box, *h);
      result = takeChunk(*h, size);
    } else if (nonblock) {
      result = fail(EAGAIN);
    } else {
      const WaiterId id = nextWaiter_++;
      h->box->receivers.push_back({id, fh, size, std::move(done)});
      waiterHomes_.emplace(id, h->box.get());
      h->parked = id;
      ++receiversWaiting_;
      return id;
    }
  }
  done(std::move(result));
  return std::nullopt;
}

Result<size_t> Engine::write(uint64_t fh, std::string_view data, off_t offset, const Caller& who) {
  std::lock_guard lock(mutex_);
  Handle* h = handle(fh);
  if (!h) return fail(EBADF);
  if (h->kind == HandleKind::Sender) {
    if (h->box->removed) return fail(EIDRM);
    // An over-long or unaffordable message is dropped whole; the next write starts anew.
    auto dropDraft = [&] {
      releaseBytes(h->draft.size());
      h->draft.clear();
      h->composing = false;
    };
    if (h->draft.size() + data.size() > h->box->maxMsgSize) {
      dropDraft();
      return fail(EFBIG);
    }
    if (auto r = reserveBytes(data.size()); !r) {
      dropDraft();
      return fail(r.error());
    }
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
    std::string& buf = *h->dropIn->payload;
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
    h->dropIn->mtime = h->dropIn->ctime = now();
    return data.size();
  }
  return fail(EBADF);
}

Status Engine::flush(uint64_t fh) {
  After after;
  Status r;
  {
    std::lock_guard lock(mutex_);
    Handle* h = handle(fh);
    if (!h) return fail(EBADF);
    if (h->kind == HandleKind::Sender && h->composing) {
      r = commitSend(*h, after);
    } else if (h->kind == HandleKind::DropIn && h->written && !h->delivered && !h->discarded) {
      r = commitDropIn(*h, after);
    }
  }
  run(after);
  return r;
}

Status Engine::fsync(uint64_t fh) { return flush(fh); }

void Engine::release(uint64_t fh) {
  After after;
  {
    std::lock_guard lock(mutex_);
    auto it = handles_.find(fh);
    if (it == handles_.end()) return;
    std::unique_ptr<Handle> h = std::move(it->second);
    handles_.erase(it);
    switch (h->kind) {
      case HandleKind::Sender:
        if (h->composing) (void)commitSend(*h, after);
        break;
      case HandleKind::DropIn:
        // Never written: delivered as an empty message when its last descriptor closes.
        if (!h->delivered && !h->discarded) {
          if (h->written || !h->dropped) {
            (void)commitDropIn(*h, after);
          } else {
            // Its only content was dropped by a failed write: nothing to send, name free.
            h->box->byName.erase(h->dropIn->name);
            messages_.erase(h->dropIn->uid);
          }
        }
        break;
      case HandleKind::Receiver:
        h->box->pollers.erase(fh);
        if (h->current) {
          // Closed (or died) mid-message: back to the head, counted.
          MessagePtr msg = std::move(h->current);
          if (auto n = h->box->byName.find(msg->name); n != h->box->byName.end() && n->second == msg)
            h->box->byName.erase(n);
          ++msg->redeliveries;
          ++h->box->redelivered;
          requeueHead(*h->box, msg, after);
          dispatch(*h->box, after);
        }
        break;
      case HandleKind::Snapshot:
        break;
    }
  }
  run(after);
}

Result<bool> Engine::poll(uint64_t fh, PollNotify notify) {
  std::lock_guard lock(mutex_);
  Handle* h = handle(fh);
  if (!h) return fail(EBADF);
  if (h->kind != HandleKind::Receiver) return true;
  Mailbox& box = *h->box;
  const bool readable = h->current || h->atEnd || !box.queue.empty() || box.removed || shutDown_;
  if (!readable && notify) box.pollers[fh] = std::move(notify);
  return readable;
}

void Engine::cancel(WaiterId id) {
  ReadCompletion done;
  {
    std::lock_guard lock(mutex_);
    auto home = waiterHomes_.find(id);
    if (home == waiterHomes_.end()) return;
    Mailbox& box = *home->second;
    waiterHomes_.erase(home);
    for (auto it = box.receivers.begin(); it != box.receivers.end(); ++it) {
      if (it->id != id) continue;
      if (Handle* h = handle(it->fh)) h->parked.reset();
      done = std::move(it->done);
      box.receivers.erase(it);
      --receiversWaiting_;
      break;
    }
  }
  if (done) done(fail(EINTR));
}

void Engine::shutdown() {
  After after;
  {
    std::lock_guard lock(mutex_);
    shutDown_ = true;
    for (auto& [id, box] : mailboxesById_) {
      for (auto& w : box->receivers) after.push_back([done = std::move(w.done)] { done(fail(ESHUTDOWN)); });
      box->receivers.clear();
      box->pollers.clear();
    }
    waiterHomes_.clear();
    receiversWaiting_ = 0;
  }
  run(after);
}

}  // namespace ipcfs
