#include "parked_read.hpp"

#include <cstdint>

#include "context.hpp"

namespace ipcfs::fs {

namespace {

// The waiter id travels as the callback's data: a completed id cancels nothing, so a late
// interrupt racing with a delivery is harmless.
void onInterrupt(fuse_req_t req, void* data) {
  fsOf(req).engine.cancel(static_cast<WaiterId>(reinterpret_cast<uintptr_t>(data)));
}

}  // namespace

void ParkedRead::reply(const Result<Bytes>& result) {
  if (result)
    fuse_reply_buf(req_, result->view.data(), result->view.size());
  else
    fuse_reply_err(req_, static_cast<int>(result.error()));
}

void ParkedRead::complete(Result<Bytes> result) {
  {
    std::lock_guard lock(mutex_);
    if (!armed_) {
      early_ = std::move(result);
      return;
    }
  }
  reply(result);
}

void ParkedRead::arm(std::optional<WaiterId> waiter) {
  if (waiter) fuse_req_interrupt_func(req_, onInterrupt, reinterpret_cast<void*>(static_cast<uintptr_t>(*waiter)));
  std::optional<Result<Bytes>> early;
  {
    std::lock_guard lock(mutex_);
    armed_ = true;
    early.swap(early_);
  }
  if (early) reply(*early);
}

}  // namespace ipcfs::fs
