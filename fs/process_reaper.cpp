#include "process_reaper.hpp"

namespace ipcfs::fs {

ProcessReaper::ProcessReaper(Engine& engine, std::chrono::milliseconds period)
    : engine_(engine), period_(period), thread_([this] { run(); }) {}

ProcessReaper::~ProcessReaper() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void ProcessReaper::run() {
  std::unique_lock lock(mutex_);
  while (!wake_.wait_for(lock, period_, [this] { return stop_; })) {
    lock.unlock();
    engine_.reapExited();
    lock.lock();
  }
}

}  // namespace ipcfs::fs
