// ProcessTable over /proc: the parent and start time are fields 4 and 22 of
// /proc/PID/stat (the start time in clock ticks since boot), the uids a line of
// /proc/PID/status; a process's identity comes from its pidfd where the kernel has pidfs.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <mutex>
#include <string_view>
#include <unordered_map>

#include "ipcfs/process_table.hpp"

namespace ipcfs {

namespace {

// Lineages are short; the bound only stops a corrupt or racing /proc from looping.
constexpr size_t kMaxLineage = 4096;

// Reads /proc/PID/FILE into `buf`; the text read, or empty.
std::string_view readProcFile(pid_t pid, const char* file, char (&buf)[1024]) {
  if (pid <= 0) return {};
  char path[48];
  std::snprintf(path, sizeof path, "/proc/%d/%s", pid, file);
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return {};
  const ssize_t n = ::read(fd, buf, sizeof buf);
  ::close(fd);
  return n > 0 ? std::string_view(buf, static_cast<size_t>(n)) : std::string_view{};
}

template <class Int>
bool parseNumber(std::string_view text, Int& out) {
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc{};
}

// Skips `n` space-separated fields.
bool skipFields(std::string_view& text, int n) {
  for (int i = 0; i < n; ++i) {
    const auto sp = text.find(' ');
    if (sp == std::string_view::npos) return false;
    text.remove_prefix(sp + 1);
  }
  return true;
}

constexpr long kPidfsMagic = 0x50494446;  // "PIDF": pidfds live on pidfs (Linux 6.9 on)

// What tells one process apart from a later one with the same pid: on pidfs, the pid's
// inode number (a 64-bit counter, never reused); elsewhere all pidfds share one anonymous
// inode and only the start time is left.
class ProcessIdentity {
 public:
  // nullopt if `pid` is gone (or was never there).
  std::optional<uint64_t> of(pid_t pid, uint64_t startTime) {
    if (!pidfs_) return startTime;
    const int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    if (fd < 0) {
      if (errno == ESRCH) return std::nullopt;
      // Out of descriptors or memory for a moment: what we knew of this process still
      // holds if its start time does (a recycled pid shows a different one, save within
      // one tick).
      std::lock_guard lock(mutex_);
      auto it = known_.find(pid);
      if (it != known_.end() && it->second.first == startTime) return it->second.second;
      return startTime;
    }
    struct stat st{};
    const bool ok = ::fstat(fd, &st) == 0;
    ::close(fd);
    if (!ok) return startTime;
    std::lock_guard lock(mutex_);
    if (known_.size() > kMaxKnown) known_.clear();
    known_[pid] = {startTime, st.st_ino};
    return st.st_ino;
  }

 private:
  static bool probePidfs() {
    const int fd = static_cast<int>(::syscall(SYS_pidfd_open, ::getpid(), 0));
    if (fd < 0) return false;
    struct statfs fs{};
    const bool pidfs = ::fstatfs(fd, &fs) == 0 && fs.f_type == kPidfsMagic;
    ::close(fd);
    return pidfs;
  }
  static constexpr size_t kMaxKnown = 1 << 16;
  const bool pidfs_ = probePidfs();
  std::mutex mutex_;  // leaf lock; guards known_
  std::unordered_map<pid_t, std::pair<uint64_t, uint64_t>> known_;  // pid -> (start time, inode)
};

class ProcProcessTable final : public ProcessTable {
 public:
  std::optional<ProcessStat> stat(pid_t pid) const override {
    char buf[1024];
    std::string_view text = readProcFile(pid, "stat", buf);
    // The command name may contain spaces and parentheses: count fields after the last ')'.
    const auto close = text.rfind(')');
    if (close == std::string_view::npos || close + 2 > text.size()) return std::nullopt;
    text.remove_prefix(close + 2);  // now at field 3 (state)
    if (text.empty() || text.front() == 'Z' || text.front() == 'X') return std::nullopt;  // exited
    ProcessStat s;
    uint64_t startTime = 0;
    if (!skipFields(text, 1) || !parseNumber(text, s.parent)) return std::nullopt;  // field 4
    if (!skipFields(text, 18) || !parseNumber(text, startTime)) return std::nullopt;  // field 22
    auto instance = identity_.of(pid, startTime);
    if (!instance) return std::nullopt;
    s.instance = *instance;
    return s;
  }

  std::optional<ProcessCredentials> credentials(pid_t pid) const override {
    char buf[1024];
    std::string_view text = readProcFile(pid, "status", buf);
    const auto at = text.find("\nUid:");
    if (at == std::string_view::npos) return std::nullopt;
    text.remove_prefix(at + 5);
    // "Uid:\treal\teffective\tsaved\tfs"
    uid_t uids[3] = {};
    for (auto& uid : uids) {
      while (!text.empty() && (text.front() == '\t' || text.front() == ' ')) text.remove_prefix(1);
      if (!parseNumber(text, uid)) return std::nullopt;
      const auto sep = text.find_first_of("\t \n");
      if (sep == std::string_view::npos) return std::nullopt;
      text.remove_prefix(sep);
    }
    return ProcessCredentials{uids[0], uids[2]};
  }

 private:
  mutable ProcessIdentity identity_;
};

}  // namespace

std::vector<pid_t> ProcessTable::lineage(pid_t pid) const {
  std::vector<pid_t> chain;
  while (pid > 0 && chain.size() < kMaxLineage) {
    auto s = stat(pid);
    if (!s) break;
    chain.push_back(pid);
    pid = s->parent;
  }
  return chain;
}

bool ProcessTable::descendsFrom(pid_t pid, pid_t ancestor) const {
  if (pid <= 0 || ancestor <= 0) return false;
  const auto chain = lineage(pid);
  return std::find(chain.begin(), chain.end(), ancestor) != chain.end();
}

std::shared_ptr<ProcessTable> systemProcessTable() { return std::make_shared<ProcProcessTable>(); }

bool exitingBySignal(pid_t tid) {
  constexpr unsigned kPfExiting = 0x4;  // include/linux/sched.h
  char buf[1024];
  std::string_view text = readProcFile(tid, "stat", buf);
  const auto close = text.rfind(')');
  if (close == std::string_view::npos || close + 2 > text.size()) return false;
  text.remove_prefix(close + 2);  // field 3 (state)
  unsigned flags = 0;
  if (!skipFields(text, 6) || !parseNumber(text, flags) || !(flags & kPfExiting)) return false;  // field 9
  int exitCode = 0;
  if (!skipFields(text, 43) || !parseNumber(text, exitCode)) return false;  // field 52
  return (exitCode & 0x7f) != 0;  // a signal number, as in a wait status
}

}  // namespace ipcfs
