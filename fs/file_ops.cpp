// Open files: open/create, read (receive, peek), write (send), flush, fsync, release, poll.
#include <fcntl.h>
#include <poll.h>

#include "caller.hpp"
#include "file_ops.hpp"
#include "parked_request.hpp"
#include "reply.hpp"
#include "stream_reply.hpp"

namespace ipcfs::fs {

namespace {

void applyOpened(fuse_file_info* fi, const Opened& o) {
  fi->fh = o.fh;
  fi->direct_io = o.directIo;
  fi->keep_cache = o.keepCache;
  fi->nonseekable = o.nonseekable;
}

// Owns a poll handle; destroying the notification that holds it frees it.
struct PollHandle {
  explicit PollHandle(fuse_pollhandle* h) : ph(h) {}
  ~PollHandle() { fuse_pollhandle_destroy(ph); }
  PollHandle(const PollHandle&) = delete;
  PollHandle& operator=(const PollHandle&) = delete;
  fuse_pollhandle* ph;
};

}  // namespace

void opOpen(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept {
  guarded(req, "open", [&] {
    auto r = fsOf(req).engine.open(ino, fi->flags, callerOf(req, true));
    if (!r) return replyError(req, r.error());
    applyOpened(fi, *r);
    const int sent = r->nonseekable ? replyOpenStream(req, *fi) : fuse_reply_open(req, fi);
    if (sent == -ENOENT) fsOf(req).engine.release(r->fh);  // opener was interrupted
  });
}

void opCreate(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, fuse_file_info* fi) noexcept {
  guarded(req, "create", [&] {
    auto r = fsOf(req).engine.create(parent, name, mode, fi->flags, callerOf(req, true));
    if (!r) return replyError(req, r.error());
    const auto& [st, opened] = *r;
    applyOpened(fi, opened);
    fuse_entry_param e{};
    e.ino = st.st_ino;
    e.attr = st;
    e.attr_timeout = attrTimeoutFor(st.st_ino);
    e.entry_timeout = entryTimeoutFor(st.st_ino, fsOf(req).sharedBackend);
    const int sent = opened.nonseekable ? replyCreateStream(req, e, *fi) : fuse_reply_create(req, &e, fi);
    if (sent == -ENOENT) fsOf(req).engine.release(opened.fh);  // creator gone
  });
}

void opRead(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info* fi) noexcept {
  guarded(req, "read", [&] {
    auto parked = std::make_shared<ParkedRequest>(req);
    Filesystem* fs = &fsOf(req);
    const uint64_t fh = fi->fh;
    auto reply = [fs, fh](fuse_req_t r, const Result<Bytes>& bytes) {
      if (!bytes) return replyError(r, bytes.error());
      const bool handedOver = fuse_reply_buf(r, bytes->view.data(), bytes->view.size()) == 0;
      // Bytes the kernel has taken for the reader: if they ended a shared message, its
      // acknowledgement starts now, while the reader asks for its end.
      if (handedOver && !bytes->view.empty() && fs->sharedBackend) fs->engine.confirmAfterReply(fh);
    };
    auto waiter = fs->engine.read(fh, size, off, (fi->flags & O_NONBLOCK) != 0, callerOf(req, true).pid,
                                  ParkedRequest::completion<Result<Bytes>>(parked, reply));
    parked->arm(waiter);
  });
}

void opWrite(fuse_req_t req, fuse_ino_t, const char* buf, size_t size, off_t off, fuse_file_info* fi) noexcept {
  guarded(req, "write", [&] {
    auto parked = std::make_shared<ParkedRequest>(req);
    auto reply = [](fuse_req_t r, const Result<size_t>& written) {
      if (!written) return replyError(r, written.error());
      fuse_reply_write(r, *written);
    };
    // A write of a batch node waits while its messages do not fit.
    parked->arm(fsOf(req).engine.write(fi->fh, std::string_view(buf, size), off, (fi->flags & O_NONBLOCK) != 0,
                                       callerOf(req, true), ParkedRequest::completion<Result<size_t>>(parked, reply)));
  });
}

// close() and fsync() deliver; they wait while the mailbox is full.
void opFlush(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept {
  guarded(req, "flush", [&] {
    auto parked = std::make_shared<ParkedRequest>(req);
    // FLUSH carries the thread that closes: an exiting one, if a signal killed its process.
    // Only a file that may hold a message being written needs that /proc read; closes of
    // .receive, pipes, shm/ and sem/ skip it.
    const auto kind = ino::kindOf(ino);
    const bool sends = kind == ino::Kind::Send || kind == ino::Kind::SendLines || kind == ino::Kind::SendFrames ||
                       kind == ino::Kind::Message;
    const bool killed = sends && exitingBySignal(fuse_req_ctx(req)->pid);
    parked->arm(fsOf(req).engine.flush(fi->fh, ParkedRequest::completion<Status>(parked, replyStatus), killed));
  });
}

void opFsync(fuse_req_t req, fuse_ino_t, int, fuse_file_info* fi) noexcept {
  guarded(req, "fsync", [&] {
    auto parked = std::make_shared<ParkedRequest>(req);
    parked->arm(fsOf(req).engine.fsync(fi->fh, ParkedRequest::completion<Status>(parked, replyStatus)));
  });
}

void opRelease(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) noexcept {
  guarded(req, "release", [&] {
    fsOf(req).engine.release(fi->fh);
    fuse_reply_err(req, 0);
  });
}

void opPoll(fuse_req_t req, fuse_ino_t, fuse_file_info* fi, fuse_pollhandle* ph) noexcept {
  guarded(req, "poll", [&] {
    std::shared_ptr<PollHandle> handle = ph ? std::make_shared<PollHandle>(ph) : nullptr;
    PollNotify notify;
    if (handle) notify = [handle] { fuse_lowlevel_notify_poll(handle->ph); };
    auto r = fsOf(req).engine.poll(fi->fh, std::move(notify));
    if (!r) return replyError(req, r.error());
    fuse_reply_poll(req, *r);
  });
}

}  // namespace ipcfs::fs
