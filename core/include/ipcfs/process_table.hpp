// What the engine needs to know about processes, behind an interface so tests can fake it.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>

namespace ipcfs {

class ProcessTable {
 public:
  virtual ~ProcessTable() = default;
  // The start time of live process `pid` (distinguishes a recycled pid), or nullopt if
  // no such process lives.
  virtual std::optional<uint64_t> startTime(pid_t pid) const = 0;
};

// Reads /proc.
std::shared_ptr<ProcessTable> systemProcessTable();

}  // namespace ipcfs
