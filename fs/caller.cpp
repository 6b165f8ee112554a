#include "caller.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <string_view>

namespace ipcfs::fs {

namespace {

pid_t tgidOf(pid_t tid) {
  if (tid <= 0) return tid;
  char path[32];
  std::snprintf(path, sizeof path, "/proc/%d/status", tid);
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return tid;
  char buf[1024];
  const ssize_t n = ::read(fd, buf, sizeof buf);
  ::close(fd);
  if (n <= 0) return tid;
  std::string_view text(buf, static_cast<size_t>(n));
  const auto at = text.find("\nTgid:");
  if (at == std::string_view::npos) return tid;
  text.remove_prefix(at + 6);
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  pid_t tgid = tid;
  std::from_chars(text.data(), text.data() + text.size(), tgid);
  return tgid;
}

}  // namespace

Caller callerOf(fuse_req_t req, bool withPid) {
  const fuse_ctx* ctx = fuse_req_ctx(req);
  return Caller{withPid ? tgidOf(ctx->pid) : ctx->pid, ctx->uid, ctx->gid};
}

}  // namespace ipcfs::fs
