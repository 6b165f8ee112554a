// Ends the FUSE session on SIGTERM, SIGINT or SIGHUP, every time and at once.
//
// libfuse 3.14's own handlers (fuse_set_signal_handlers) only set the session's exit flag
// and count on the signal interrupting the wait of the thread that runs the loop. A signal
// taken by another thread of the process (a thread of ours that does not block it), or one
// arriving between the loop's test of the flag and its next wait, leaves the daemon serving
// until the next request comes, which after the last client is never (libfuse issue #997,
// fixed in 3.18; seen here as a daemon that outlived SIGTERM by 10 s in CI).
//
// Here the three signals are blocked in every thread (a new thread inherits the mask, so
// libfuse's workers and the engine's threads do too), one thread of its own takes them with
// sigwait, ends the session, and interrupts the loop's thread with SIGUSR1 (a handler that
// does nothing, without SA_RESTART) every few milliseconds until the loop has returned.
//
// Thread safety: blockTerminationSignals runs before any thread is started (so that every
// thread inherits the mask); the constructor runs later, on the thread that will run the
// loop, and the destructor on that thread once the loop has returned.
#pragma once

#include "fuse.hpp"
#include <pthread.h>

#include <condition_variable>
#include <mutex>
#include <thread>

namespace ipcfs::fs {

// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread and in every thread it starts
// later, and ignores SIGPIPE (a client gone while we reply is no reason to die).
void blockTerminationSignals();

class ShutdownSignals {
 public:
  explicit ShutdownSignals(fuse_session* session);
  ~ShutdownSignals();  // the loop has returned: stops waking it, joins the signal thread
  ShutdownSignals(const ShutdownSignals&) = delete;
  ShutdownSignals& operator=(const ShutdownSignals&) = delete;

  int received() const;  // the signal that ended the session, or 0

 private:
  void run();

  fuse_session* const session_;
  const pthread_t loopThread_;
  mutable std::mutex mutex_;  // leaf lock; guards the two members below
  std::condition_variable stopped_;
  bool stopping_ = false;
  int received_ = 0;
  std::thread thread_;  // started by the constructor once SIGUSR1 has its handler
};

}  // namespace ipcfs::fs
