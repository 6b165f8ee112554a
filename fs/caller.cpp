#include "caller.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <charconv>
#include <chrono>
#include <mutex>
#include <cstdio>
#include <string_view>

namespace ipcfs::fs {

namespace {

pid_t readTgid(pid_t tid) {
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

// The thread group of a thread never changes while it lives; a recycled tid would need a
// thread to die and its id to be reused within the entry's lifetime, so entries expire
// after a second. Saves a /proc read on every READ/WRITE of a busy client.
class TgidCache {
 public:
  pid_t lookup(pid_t tid) {
    if (tid <= 0) return tid;
    const auto now = std::chrono::steady_clock::now();
    Slot& slot = slots_[static_cast<size_t>(tid) % slots_.size()];
    {
      std::lock_guard lock(mutex_);
      if (slot.tid == tid && now - slot.at < std::chrono::seconds(1)) return slot.tgid;
    }
    const pid_t tgid = readTgid(tid);
    std::lock_guard lock(mutex_);
    slot = {tid, tgid, now};
    return tgid;
  }

 private:
  struct Slot {
    pid_t tid = 0;
    pid_t tgid = 0;
    std::chrono::steady_clock::time_point at;
  };
  std::mutex mutex_;  // leaf lock; guards slots_
  std::array<Slot, 1024> slots_{};
};

pid_t tgidOf(pid_t tid) {
  static TgidCache cache;
  return cache.lookup(tid);
}

}  // namespace

Caller callerOf(fuse_req_t req, bool withPid) {
  const fuse_ctx* ctx = fuse_req_ctx(req);
  return Caller{withPid ? tgidOf(ctx->pid) : ctx->pid, ctx->uid, ctx->gid};
}

}  // namespace ipcfs::fs
