// ProcessTable over /proc: start time is field 22 of /proc/PID/stat (clock ticks since boot).
#include <fcntl.h>
#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <string_view>

#include "ipcfs/process_table.hpp"

namespace ipcfs {

namespace {

class ProcProcessTable final : public ProcessTable {
 public:
  std::optional<uint64_t> startTime(pid_t pid) const override {
    if (pid <= 0) return std::nullopt;
    char path[32];
    std::snprintf(path, sizeof path, "/proc/%d/stat", pid);
    const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return std::nullopt;
    char buf[1024];
    const ssize_t n = ::read(fd, buf, sizeof buf);
    ::close(fd);
    if (n <= 0) return std::nullopt;
    std::string_view text(buf, static_cast<size_t>(n));
    // The command name may contain spaces and parentheses: count fields after the last ')'.
    const auto close = text.rfind(')');
    if (close == std::string_view::npos) return std::nullopt;
    text.remove_prefix(close + 2);  // now at field 3 (state)
    if (!text.empty() && text.front() == 'Z') return std::nullopt;  // exited, not yet reaped
    for (int field = 3; field < 22; ++field) {
      const auto sp = text.find(' ');
      if (sp == std::string_view::npos) return std::nullopt;
      text.remove_prefix(sp + 1);
    }
    uint64_t start = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), start);
    if (ec != std::errc{}) return std::nullopt;
    return start;
  }
};

}  // namespace

std::shared_ptr<ProcessTable> systemProcessTable() { return std::make_shared<ProcProcessTable>(); }

}  // namespace ipcfs
