// ProcessTable over /proc: the parent and start time are fields 4 and 22 of
// /proc/PID/stat (the start time in clock ticks since boot), the uids a line of
// /proc/PID/status.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <string_view>

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
    if (!skipFields(text, 1) || !parseNumber(text, s.parent)) return std::nullopt;  // field 4
    if (!skipFields(text, 18) || !parseNumber(text, s.startTime)) return std::nullopt;  // field 22
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

}  // namespace ipcfs
