// A request whose reply may come later, from whichever thread completes its engine waiter
// (a blocked read, write, close or fsync).
//
// Two hazards shape it (see fuse-notes): fuse_req_interrupt_func on a request that is
// already replied is a use-after-free, and a reply from inside the interrupt callback
// invoked by fuse_req_interrupt_func itself frees the request under libfuse's lock. So a
// reply that becomes ready before arm() is kept, and arm() sends it after registration.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <optional>

#include "fuse.hpp"
#include "ipcfs/engine.hpp"

namespace ipcfs::fs {

class ParkedRequest {
 public:
  using Reply = std::function<void(fuse_req_t)>;

  explicit ParkedRequest(fuse_req_t req) : req_(req) {}
  // A completion the engine dropped without running would leave the client blocked for
  // ever and leak the request: answer it with EIO and say so.
  ~ParkedRequest();
  ParkedRequest(const ParkedRequest&) = delete;
  ParkedRequest& operator=(const ParkedRequest&) = delete;

  // Builds the engine completion: turns the result into a reply sent by complete().
  template <class T, class Replier>
  static std::function<void(T)> completion(const std::shared_ptr<ParkedRequest>& self, Replier replier) {
    return [self, replier](T result) {
      self->complete([replier, result = std::move(result)](fuse_req_t req) { replier(req, result); });
    };
  }

  // Runs at most once, on any thread: replies now if armed, else keeps the reply for arm().
  void complete(Reply reply);
  // Called once the engine call returned: registers interrupt handling if the request was
  // parked, then sends a reply that became ready meanwhile.
  void arm(std::optional<WaiterId> waiter);

 private:
  fuse_req_t req_;
  std::mutex mutex_;  // leaf lock; guards the three members below
  bool armed_ = false;
  bool answered_ = false;
  Reply early_;
};

}  // namespace ipcfs::fs
