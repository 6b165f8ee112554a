// What the engine needs to know about processes, behind an interface so tests can fake it.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

namespace ipcfs {

// A live process. `instance` tells it apart from a later process that gets the same pid:
// the pid's pidfs inode number where the kernel has pidfs (Linux 6.9 on; unique for the
// life of the system), else its start time in clock ticks (two processes that get the same
// pid within one tick, 10 ms, look alike there).
struct ProcessStat {
  uint64_t instance = 0;
  pid_t parent = 0;
};

// Who may signal a process (kill(2)): a caller whose uid is its real or saved uid.
struct ProcessCredentials {
  uid_t realUid = 0;
  uid_t savedUid = 0;
};

class ProcessTable {
 public:
  virtual ~ProcessTable() = default;
  // nullopt if no such process lives (a zombie no longer counts).
  virtual std::optional<ProcessStat> stat(pid_t pid) const = 0;
  virtual std::optional<ProcessCredentials> credentials(pid_t pid) const = 0;

  std::optional<uint64_t> instance(pid_t pid) const {
    auto s = stat(pid);
    return s ? std::optional<uint64_t>(s->instance) : std::nullopt;
  }
  // `pid`, its parent, grandparent... up to the first process of its pid namespace (or the
  // first one that is gone); empty if `pid` does not live.
  std::vector<pid_t> lineage(pid_t pid) const;
  // Whether `pid` is `ancestor` or descends from it.
  bool descendsFrom(pid_t pid, pid_t ancestor) const;
};

// Reads /proc.
std::shared_ptr<ProcessTable> systemProcessTable();

// Whether thread `tid` is exiting because a signal killed it (from /proc: PF_EXITING and a
// signal in its exit code). A descriptor closed by such an exit was never close()d by the
// program: the daemon drops the message it was writing.
bool exitingBySignal(pid_t tid);

}  // namespace ipcfs
