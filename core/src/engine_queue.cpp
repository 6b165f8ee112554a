// Queues: delivering, taking, redelivering and handing messages to parked receivers.
#include <cerrno>

#include <fmt/format.h>

#include "clock.hpp"
#include "ipcfs/engine.hpp"
#include "objects.hpp"

namespace ipcfs {

using detail::Handle;
using detail::Mailbox;
using detail::MessageState;

void Engine::run(After& after) {
  for (auto& f : after) f();
  after.clear();
}

// REQUIRES: mutex_ held (for all below).
Status Engine::reserveBytes(uint64_t n) {
  if (limits_.maxBytes != kUnlimited && (n > limits_.maxBytes || bytesUsed_ > limits_.maxBytes - n))
    return fail(ENOSPC);
  bytesUsed_ += n;
  return {};
}

void Engine::releaseBytes(uint64_t n) { bytesUsed_ -= std::min(n, bytesUsed_); }

void Engine::enqueueTail(Mailbox& box, const MessagePtr& msg, After& after) {
  msg->order = ++box.tailKey;
  msg->state = MessageState::Queued;
  box.queue.emplace(msg->order, msg);
  box.listed.emplace(msg->uid, msg);
  box.byName.emplace(msg->name, msg);
  messages_.emplace(msg->uid, msg);
  box.queuedBytes += msg->payload->size();
  ++queuedMessages_;
  queuedBytes_ += msg->payload->size();
  wakePollers(box, after);
}

void Engine::requeueHead(Mailbox& box, const MessagePtr& msg, After& after) {
  msg->order = --box.headKey;
  msg->state = MessageState::Queued;
  box.queue.emplace(msg->order, msg);
  box.listed.emplace(msg->uid, msg);
  box.byName.emplace(msg->name, msg);
  messages_.emplace(msg->uid, msg);
  box.queuedBytes += msg->payload->size();
  ++queuedMessages_;
  queuedBytes_ += msg->payload->size();
  wakePollers(box, after);
}

// Takes a queued message out of every index of its mailbox.
void Engine::unqueue(Mailbox& box, const MessagePtr& msg) {
  box.queue.erase(msg->order);
  box.listed.erase(msg->uid);
  if (auto it = box.byName.find(msg->name); it != box.byName.end() && it->second == msg) box.byName.erase(it);
  messages_.erase(msg->uid);
  box.queuedBytes -= msg->payload->size();
  --queuedMessages_;
  queuedBytes_ -= msg->payload->size();
}

// The head message becomes the receiver's: no longer listed or receivable by others, but
// its name stays taken until it is read to the end or comes back.
void Engine::takeHead(Mailbox& box, Handle& h) {
  MessagePtr msg = box.queue.begin()->second;
  unqueue(box, msg);
  box.byName.emplace(msg->name, msg);
  msg->state = MessageState::InFlight;
  h.current = msg;
  h.offset = 0;
  h.atEnd = false;
}

Bytes Engine::takeChunk(Handle& h, size_t size) {
  const auto& payload = h.current->payload;
  const size_t len = std::min(size, payload->size() - h.offset);
  Bytes chunk = Bytes::slice(payload, h.offset, len);
  h.offset += len;
  if (h.offset == payload->size()) {
    finishMessage(h);
    // The read that returned the last bytes is followed by one returning 0 (end of
    // message); an empty message's end is the 0 this read returns.
    h.atEnd = len > 0;
  }
  return chunk;
}

// The receiver read the last byte: the message is gone.
void Engine::finishMessage(Handle& h) {
  Mailbox& box = *h.box;
  MessagePtr msg = std::move(h.current);
  if (auto it = box.byName.find(msg->name); it != box.byName.end() && it->second == msg) box.byName.erase(it);
  releaseBytes(msg->payload->size());
  ++box.received;
  h.offset = 0;
}

void Engine::wakePollers(Mailbox& box, After& after) {
  for (auto& [fh, notify] : box.pollers) after.push_back(std::move(notify));
  box.pollers.clear();
}

// Hands queued messages to parked receivers, longest-waiting first.
void Engine::dispatch(Mailbox& box, After& after) {
  while (!box.receivers.empty() && !box.queue.empty()) {
    detail::Waiter w = std::move(box.receivers.front());
    box.receivers.pop_front();
    waiterHomes_.erase(w.id);
    --receiversWaiting_;
    Handle* h = handle(w.fh);
    h->parked.reset();
    takeHead(box, *h);
    after.push_back([done = std::move(w.done), chunk = takeChunk(*h, w.size)] { done(chunk); });
  }
}

Status Engine::deliver(const MailboxPtr& box, MessagePtr msg, After& after) {
  if (box->removed) return fail(EIDRM);
  msg->seq = box->nextSeq++;
  if (msg->name.empty()) {
    // Named by sequence number; skip numbers whose name a forwarded message already took.
    msg->name = fmt::format("{:010}", msg->seq);
    while (box->byName.contains(msg->name)) {
      msg->seq = box->nextSeq++;
      msg->name = fmt::format("{:010}", msg->seq);
    }
  }
  msg->atime = msg->mtime = msg->ctime = now();
  box->mtime = box->ctime = msg->mtime;
  ++box->sent;
  enqueueTail(*box, msg, after);
  dispatch(*box, after);
  return {};
}

Status Engine::commitSend(Handle& h, After& after) {
  auto msg = std::make_shared<detail::Message>();
  msg->uid = nextMessageUid_++;
  msg->payload = std::make_shared<std::string>(std::move(h.draft));
  msg->senderPid = h.writerPid;
  msg->uid_ = h.writerUid;
  msg->gid = h.writerGid;
  h.draft.clear();
  h.composing = false;
  auto r = deliver(h.box, msg, after);
  if (!r) releaseBytes(msg->payload->size());
  return r;
}

Status Engine::commitDropIn(Handle& h, After& after) {
  h.delivered = true;
  return deliver(h.box, h.dropIn, after);
}

}  // namespace ipcfs
