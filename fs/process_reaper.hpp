// Retires the inboxes of exited processes (procs/) about once a second, so that receivers
// waiting on an exited process's inbox are answered and its messages do not linger. The
// engine has no threads of its own; this is the daemon's one housekeeping thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "ipcfs/engine.hpp"

namespace ipcfs::fs {

class ProcessReaper {
 public:
  explicit ProcessReaper(Engine& engine, std::chrono::milliseconds period = std::chrono::seconds(1));
  ~ProcessReaper();  // stops and joins
  ProcessReaper(const ProcessReaper&) = delete;
  ProcessReaper& operator=(const ProcessReaper&) = delete;

 private:
  void run();

  Engine& engine_;
  const std::chrono::milliseconds period_;
  std::mutex mutex_;  // leaf lock; guards stop_
  std::condition_variable wake_;
  bool stop_ = false;
  std::thread thread_;  // last: starts once the members above exist
};

}  // namespace ipcfs::fs
