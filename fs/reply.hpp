// Replies shared by the handlers: errors, entries and attributes, and the guard that turns
// anything thrown into exactly one error reply.
#pragma once

#include <spdlog/spdlog.h>

#include <new>
#include <system_error>

#include "context.hpp"
#include "ipcfs/inode.hpp"

namespace ipcfs::fs {

// With default_permissions the kernel checks the attributes of every directory on a path
// and of the file opened, fetching them again once they expire: with no caching an echo
// into .send costs two GETATTRs besides its four requests. So attributes are cached:
// forever for the root and top-level directories (they never change); for a second for
// mailboxes and their control nodes (what changes from the daemon's side is only a
// mailbox's times and a .status size; a chmod/chown goes through this mount and
// invalidates the control nodes, see node_ops.cpp); not at all for messages, shm/ and
// sem/ files. Names change from the daemon's side
// only for messages (taken, forwarded) and by-id links (a mailbox removed); every other
// name changes only through this mount's own mkdir/rmdir/rename/unlink, which the kernel
// sees, so those entries may stay cached and save a LOOKUP per path component.
inline constexpr double kStableEntryTimeout = 3600.0;
inline constexpr double kStableAttrTimeout = 3600.0;

inline constexpr double kMailboxAttrTimeout = 1.0;

inline double attrTimeoutFor(uint64_t ino) {
  if (ino >= ino::kRoot && ino <= ino::kById) return kStableAttrTimeout;
  const auto kind = ino::kindOf(ino);
  return kind >= ino::Kind::Mailbox && kind <= ino::Kind::ReceiveFrames ? kMailboxAttrTimeout : 0.0;
}

// procs/PID names a process instance that may exit and whose pid may be reused, and
// procs/PID/from/Q exists only while Q lives or has messages there: looked up every time.
// With a shared backend, another host may remove, rename or make a mailbox or semaphore:
// their names are kept for a second only.
inline double entryTimeoutFor(uint64_t ino, bool sharedBackend) {
  const auto kind = ino::kindOf(ino);
  const bool changesBehindOurBack = kind == ino::Kind::Message || kind == ino::Kind::IdLink ||
                                    kind == ino::Kind::Inbox || kind == ino::Kind::From;
  if (changesBehindOurBack) return 0.0;
  if (sharedBackend && (kind == ino::Kind::Mailbox || kind == ino::Kind::Semaphore)) return kMailboxAttrTimeout;
  return kStableEntryTimeout;
}

// Every error reply goes through here, so .metrics counts errors by errno.
inline void replyErrno(fuse_req_t req, int errnum) {
  fsOf(req).engine.recordError(errnum);
  fuse_reply_err(req, errnum);
}
inline void replyError(fuse_req_t req, std::errc e) { replyErrno(req, static_cast<int>(e)); }

inline void replyEntry(fuse_req_t req, const struct stat& st) {
  fuse_entry_param e{};
  e.ino = st.st_ino;
  e.attr = st;
  e.attr_timeout = attrTimeoutFor(st.st_ino);
  e.entry_timeout = entryTimeoutFor(st.st_ino, fsOf(req).sharedBackend);
  fuse_reply_entry(req, &e);
}

inline void replyStatus(fuse_req_t req, const Status& r) {
  if (r)
    fuse_reply_err(req, 0);
  else
    replyError(req, r.error());
}

// Runs a handler body; a body ends every path in one fuse_reply_* and throws only before it.
template <class Body>
void guarded(fuse_req_t req, const char* op, Body&& body) noexcept {
  try {
    body();
  } catch (const std::bad_alloc&) {
    replyErrno(req, ENOMEM);
  } catch (const std::exception& ex) {
    spdlog::error("{}: {}", op, ex.what());
    replyErrno(req, EIO);
  } catch (...) {
    spdlog::error("{}: unknown exception", op);
    replyErrno(req, EIO);
  }
}

}  // namespace ipcfs::fs
