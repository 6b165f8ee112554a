// Replies shared by the handlers: errors, entries and attributes, and the guard that turns
// anything thrown into exactly one error reply.
#pragma once

#include <spdlog/spdlog.h>

#include <new>
#include <system_error>

#include "context.hpp"
#include "ipcfs/inode.hpp"

namespace ipcfs::fs {

// Attributes change from the daemon's side at any time (a mailbox's mtime when a message
// arrives, .status sizes), so the kernel caches none. Names change from the daemon's side
// only for messages (taken, forwarded) and by-id links (a mailbox removed); every other
// name changes only through this mount's own mkdir/rmdir/rename/unlink, which the kernel
// sees, so those entries may stay cached and save a LOOKUP per path component.
inline constexpr double kAttrTimeout = 0.0;
inline constexpr double kStableEntryTimeout = 3600.0;

inline double entryTimeoutFor(uint64_t ino) {
  const auto kind = ino::kindOf(ino);
  return kind == ino::Kind::Message || kind == ino::Kind::IdLink ? 0.0 : kStableEntryTimeout;
}

inline void replyError(fuse_req_t req, std::errc e) { fuse_reply_err(req, static_cast<int>(e)); }

inline void replyEntry(fuse_req_t req, const struct stat& st) {
  fuse_entry_param e{};
  e.ino = st.st_ino;
  e.attr = st;
  e.attr_timeout = kAttrTimeout;
  e.entry_timeout = entryTimeoutFor(st.st_ino);
  fuse_reply_entry(req, &e);
}

inline void replyStatus(fuse_req_t req, const Status& r) { fuse_reply_err(req, r ? 0 : static_cast<int>(r.error())); }

// Runs a handler body; a body ends every path in one fuse_reply_* and throws only before it.
template <class Body>
void guarded(fuse_req_t req, const char* op, Body&& body) noexcept {
  try {
    body();
  } catch (const std::bad_alloc&) {
    fuse_reply_err(req, ENOMEM);
  } catch (const std::exception& ex) {
    spdlog::error("{}: {}", op, ex.what());
    fuse_reply_err(req, EIO);
  } catch (...) {
    spdlog::error("{}: unknown exception", op);
    fuse_reply_err(req, EIO);
  }
}

}  // namespace ipcfs::fs
