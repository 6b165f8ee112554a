// Names and attributes: lookup, getattr, setattr, readlink, forget.
#include "node_ops.hpp"

#include "caller.hpp"
#include "reply.hpp"

namespace ipcfs::fs {

void opLookup(fuse_req_t req, fuse_ino_t parent, const char* name) noexcept {
  guarded(req, "lookup", [&] {
    auto r = fsOf(req).engine.lookup(parent, name, callerOf(req, ino::dependsOnCaller(parent)));
    if (!r) return replyError(req, r.error());
    replyEntry(req, *r);
  });
}

// Inode numbers are computed, not allocated (ipcfs/inode.hpp): nothing to forget.
void opForget(fuse_req_t req, fuse_ino_t, uint64_t) noexcept { fuse_reply_none(req); }
void opForgetMulti(fuse_req_t req, size_t, fuse_forget_data*) noexcept { fuse_reply_none(req); }

void opGetattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) noexcept {
  guarded(req, "getattr", [&] {
    auto r = fsOf(req).engine.getattr(ino);
    if (!r) return replyError(req, r.error());
    fuse_reply_attr(req, &*r, attrTimeoutFor(ino));
  });
}

void opSetattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info*) noexcept {
  guarded(req, "setattr", [&] {
    AttrChange change;
    timespec nowTs{};
    clock_gettime(CLOCK_REALTIME, &nowTs);
    if (to_set & FUSE_SET_ATTR_MODE) change.mode = attr->st_mode;
    if (to_set & FUSE_SET_ATTR_UID) change.uid = attr->st_uid;
    if (to_set & FUSE_SET_ATTR_GID) change.gid = attr->st_gid;
    if (to_set & FUSE_SET_ATTR_SIZE) change.size = attr->st_size;
    if (to_set & FUSE_SET_ATTR_ATIME) change.atime = attr->st_atim;
    if (to_set & FUSE_SET_ATTR_MTIME) change.mtime = attr->st_mtim;
    if (to_set & FUSE_SET_ATTR_ATIME_NOW) change.atime = nowTs;
    if (to_set & FUSE_SET_ATTR_MTIME_NOW) change.mtime = nowTs;
    auto r = fsOf(req).engine.setattr(ino, change);
    if (!r) return replyError(req, r.error());
    if (ino::kindOf(ino) == ino::Kind::Mailbox && (change.mode || change.uid || change.gid)) {
      // Control nodes take their mode and owner from the mailbox: drop their cached
      // attributes now rather than when they expire. (No directory lock is involved:
      // safe from inside a request.)
      for (auto kind : {ino::Kind::Send, ino::Kind::Receive, ino::Kind::Status, ino::Kind::SendLines,
                        ino::Kind::ReceiveLines, ino::Kind::SendFrames, ino::Kind::ReceiveFrames})
        fuse_lowlevel_notify_inval_inode(fsOf(req).session, ino::make(kind, ino::idOf(ino)), -1, 0);
    }
    fuse_reply_attr(req, &*r, attrTimeoutFor(ino));
  });
}

void opReadlink(fuse_req_t req, fuse_ino_t ino) noexcept {
  guarded(req, "readlink", [&] {
    auto r = fsOf(req).engine.readlink(ino, callerOf(req, ino::dependsOnCaller(ino)));
    if (!r) return replyError(req, r.error());
    fuse_reply_readlink(req, r->c_str());
  });
}

}  // namespace ipcfs::fs
