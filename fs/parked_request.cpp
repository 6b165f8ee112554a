#include "parked_request.hpp"

#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstdint>

#include "context.hpp"

namespace ipcfs::fs {

namespace {

// The waiter id travels as the callback's data: a completed id cancels nothing, so a late
// interrupt racing with a completion is harmless.
void onInterrupt(fuse_req_t req, void* data) {
  fsOf(req).engine.cancel(static_cast<WaiterId>(reinterpret_cast<uintptr_t>(data)));
}

}  // namespace

ParkedRequest::~ParkedRequest() {
  // Not armed: the handler failed before parking, and guarded() has answered.
  if (!armed_ || answered_) return;
  spdlog::error("a parked request was dropped unanswered; answering EIO");
  fuse_reply_err(req_, EIO);
}

void ParkedRequest::complete(Reply reply) {
  {
    std::lock_guard lock(mutex_);
    if (!armed_) {
      early_ = std::move(reply);
      return;
    }
    answered_ = true;
  }
  reply(req_);
}

void ParkedRequest::arm(std::optional<WaiterId> waiter) {
  if (waiter) fuse_req_interrupt_func(req_, onInterrupt, reinterpret_cast<void*>(static_cast<uintptr_t>(*waiter)));
  Reply early;
  {
    std::lock_guard lock(mutex_);
    armed_ = true;
    early.swap(early_);
    answered_ = static_cast<bool>(early);
  }
  if (early) early(req_);
}

}  // namespace ipcfs::fs
