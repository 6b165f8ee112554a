#include "shutdown_signals.hpp"

#include <chrono>
#include <csignal>

namespace ipcfs::fs {

namespace {

// How often the loop's thread is interrupted until it sees the exit flag: a wake-up lost
// in the window between its test of the flag and its wait costs one period, not forever.
constexpr auto kWakePeriod = std::chrono::milliseconds(20);

sigset_t terminationSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  return set;
}

void doNothing(int) {}

}  // namespace

void blockTerminationSignals() {
  const sigset_t set = terminationSignals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  struct sigaction ignore{};
  ignore.sa_handler = SIG_IGN;
  sigaction(SIGPIPE, &ignore, nullptr);
}

ShutdownSignals::ShutdownSignals(fuse_session* session) : session_(session), loopThread_(pthread_self()) {
  // No SA_RESTART: the interrupted wait (sem_wait in the multithreaded loop, read of
  // /dev/fuse in the single-threaded one) must return EINTR so that the loop looks again.
  // Installed before the thread that sends SIGUSR1 exists (its default action kills).
  struct sigaction wake{};
  wake.sa_handler = doNothing;
  sigemptyset(&wake.sa_mask);
  sigaction(SIGUSR1, &wake, nullptr);
  thread_ = std::thread([this] { run(); });
}

ShutdownSignals::~ShutdownSignals() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    // Still in sigwait (no signal came): a SIGTERM of its own ends that wait.
    if (received_ == 0) pthread_kill(thread_.native_handle(), SIGTERM);
  }
  stopped_.notify_all();
  thread_.join();
}

int ShutdownSignals::received() const {
  std::lock_guard lock(mutex_);
  return received_;
}

void ShutdownSignals::run() {
  const sigset_t set = terminationSignals();
  int sig = 0;
  while (sigwait(&set, &sig) != 0) {
  }
  std::unique_lock lock(mutex_);
  if (stopping_) return;  // the loop ended by itself (an unmount); this was our own SIGTERM
  received_ = sig;
  fuse_session_exit(session_);
  while (!stopping_) {
    pthread_kill(loopThread_, SIGUSR1);
    stopped_.wait_for(lock, kWakePeriod);
  }
}

}  // namespace ipcfs::fs
