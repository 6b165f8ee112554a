// Directories: mkdir, rmdir, unlink, rename, listing; and the node kinds users may not make.
#include <vector>

#include "caller.hpp"
#include "node_ops.hpp"
#include "reply.hpp"

namespace ipcfs::fs {

void opMkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) noexcept {
  guarded(req, "mkdir", [&] {
    auto r = fsOf(req).engine.mkdir(parent, name, mode, callerOf(req));
    if (!r) return replyError(req, r.error());
    replyEntry(req, *r);
  });
}

void opRmdir(fuse_req_t req, fuse_ino_t parent, const char* name) noexcept {
  guarded(req, "rmdir", [&] { replyStatus(req, fsOf(req).engine.rmdir(parent, name)); });
}

void opUnlink(fuse_req_t req, fuse_ino_t parent, const char* name) noexcept {
  guarded(req, "unlink", [&] {
    replyStatus(req, fsOf(req).engine.unlink(parent, name, callerOf(req, ino::dependsOnCaller(parent))));
  });
}

void opRename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent, const char* newname,
              unsigned int flags) noexcept {
  guarded(req, "rename", [&] {
    const bool withPid = ino::dependsOnCaller(parent) || ino::dependsOnCaller(newparent);
    replyStatus(req, fsOf(req).engine.rename(parent, name, newparent, newname, flags, callerOf(req, withPid)));
  });
}

// mkfifo in pipes/; devices, hard links and symlinks are not made by users.
void opMknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t) noexcept {
  guarded(req, "mknod", [&] {
    auto r = fsOf(req).engine.mknod(parent, name, mode, callerOf(req));
    if (!r) return replyError(req, r.error());
    replyEntry(req, *r);
  });
}
void opSymlink(fuse_req_t req, const char*, fuse_ino_t, const char*) noexcept { replyErrno(req, EPERM); }
void opLink(fuse_req_t req, fuse_ino_t, fuse_ino_t, const char*) noexcept { replyErrno(req, EPERM); }

void opOpendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept {
  guarded(req, "opendir", [&] {
    auto r = fsOf(req).engine.getattr(ino);
    if (!r) return replyError(req, r.error());
    if (!S_ISDIR(r->st_mode)) return replyErrno(req, ENOTDIR);
    fi->fh = 0;
    fuse_reply_open(req, fi);
  });
}

// One page of entries per call, resuming at `off`: listing 100,000 messages never rescans.
void opReaddir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) noexcept {
  guarded(req, "readdir", [&] {
    std::vector<char> buf(size);
    size_t used = 0;
    std::string name;
    auto r = fsOf(req).engine.readdir(ino, static_cast<uint64_t>(off), [&](const DirEntry& e) {
      name.assign(e.name);
      const size_t need = fuse_add_direntry(req, buf.data() + used, size - used, name.c_str(), &e.attr,
                                            static_cast<off_t>(e.next));
      if (need > size - used) return false;
      used += need;
      return true;
    }, callerOf(req, ino::dependsOnCaller(ino)));
    if (!r) return replyError(req, r.error());
    fuse_reply_buf(req, buf.data(), used);
  });
}

void opReleasedir(fuse_req_t req, fuse_ino_t, fuse_file_info*) noexcept { fuse_reply_err(req, 0); }

}  // namespace ipcfs::fs
