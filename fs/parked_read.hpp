// A READ whose reply may come later, from whichever thread completes its engine waiter.
//
// Two hazards shape it (see fuse-notes): fuse_req_interrupt_func on a request that is
// already replied is a use-after-free, and a reply from inside the interrupt callback
// invoked by fuse_req_interrupt_func itself frees the request under libfuse's lock. So a
// result that arrives before arm() is kept, and arm() replies it after registration.
#pragma once

#include <memory>
#include <mutex>
#include <optional>

#include "fuse.hpp"
#include "ipcfs/engine.hpp"

namespace ipcfs::fs {

class ParkedRead {
 public:
  explicit ParkedRead(fuse_req_t req) : req_(req) {}

  // The engine's completion; runs at most once, on any thread.
  void complete(Result<Bytes> result);
  // Called once engine.read() returned: registers interrupt handling if the read was
  // parked, then replies a result that arrived meanwhile.
  void arm(std::optional<WaiterId> waiter);

  static ReadCompletion completionFor(const std::shared_ptr<ParkedRead>& self) {
    return [self](Result<Bytes> r) { self->complete(std::move(r)); };
  }

 private:
  void reply(const Result<Bytes>& result);

  fuse_req_t req_;
  std::mutex mutex_;  // leaf lock; guards the two members below
  bool armed_ = false;
  std::optional<Result<Bytes>> early_;
};

}  // namespace ipcfs::fs
