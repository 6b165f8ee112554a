// Extended attributes: user.ipc.* as decimal text.
#include "node_ops.hpp"
#include "reply.hpp"

namespace ipcfs::fs {

namespace {

// getxattr/listxattr protocol: size 0 asks for the length, a short buffer is ERANGE.
void replyValue(fuse_req_t req, const std::string& value, size_t size) {
  if (size == 0) {
    fuse_reply_xattr(req, value.size());
  } else if (size < value.size()) {
    replyErrno(req, ERANGE);
  } else {
    fuse_reply_buf(req, value.data(), value.size());
  }
}

}  // namespace

void opSetxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size, int) noexcept {
  guarded(req, "setxattr",
          [&] { replyStatus(req, fsOf(req).engine.setxattr(ino, name, std::string_view(value, size))); });
}

void opGetxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) noexcept {
  guarded(req, "getxattr", [&] {
    auto r = fsOf(req).engine.getxattr(ino, name);
    if (!r) return replyError(req, r.error());
    replyValue(req, *r, size);
  });
}

void opListxattr(fuse_req_t req, fuse_ino_t ino, size_t size) noexcept {
  guarded(req, "listxattr", [&] {
    auto r = fsOf(req).engine.listxattr(ino);
    if (!r) return replyError(req, r.error());
    replyValue(req, *r, size);
  });
}

void opRemovexattr(fuse_req_t req, fuse_ino_t ino, const char* name) noexcept {
  guarded(req, "removexattr", [&] { replyStatus(req, fsOf(req).engine.removexattr(ino, name)); });
}

}  // namespace ipcfs::fs
