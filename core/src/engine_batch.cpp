// Batch nodes: many messages per call. `.send-lines`: each complete line written is one
// message; `.send-frames`: each complete frame (4-byte little-endian length, payload).
// The complete units of one write() enter together and in order; an incomplete last one
// waits for the write that completes it (or, for a line, for close()). `.receive-lines` /
// `.receive-frames`: one read() takes as many whole messages as fit its buffer.
#include <algorithm>
#include <cerrno>
#include <cstring>

#include "ipcfs/engine.hpp"
#include "objects.hpp"

namespace ipcfs {

using detail::Batch;
using detail::Handle;
using detail::Mailbox;
using detail::Message;
using detail::WaitKind;
using detail::Waiter;

namespace {

struct Unit {
  size_t start, length, end;  // payload [start, start+length); the unit ends at `end`
};

uint32_t readLength(const char* p) {
  unsigned char b[4];
  std::memcpy(b, p, 4);
  return uint32_t{b[0]} | (uint32_t{b[1]} << 8) | (uint32_t{b[2]} << 16) | (uint32_t{b[3]} << 24);
}

void appendLength(std::string& out, size_t n) {
  const auto v = static_cast<uint32_t>(n);
  const char b[4] = {static_cast<char>(v & 0xff), static_cast<char>((v >> 8) & 0xff),
                     static_cast<char>((v >> 16) & 0xff), static_cast<char>((v >> 24) & 0xff)};
  out.append(b, 4);
}

// Splits the complete units off the front of `buf`; `consumed` is where the rest begins.
// EFBIG if any unit, or the incomplete rest, is longer than `maxMsg`.
Result<std::vector<Unit>> splitUnits(Batch batch, std::string_view buf, uint64_t maxMsg, size_t& consumed) {
  std::vector<Unit> units;
  size_t pos = 0;
  if (batch == Batch::Lines) {
    for (size_t nl; (nl = buf.find('\n', pos)) != std::string_view::npos; pos = nl + 1) {
      if (nl - pos > maxMsg) return fail(EFBIG);
      units.push_back({pos, nl - pos, nl + 1});
    }
    if (buf.size() - pos > maxMsg) return fail(EFBIG);
  } else {
    while (buf.size() - pos >= 4) {
      const uint32_t len = readLength(buf.data() + pos);
      if (len > maxMsg) return fail(EFBIG);
      if (buf.size() - pos - 4 < len) break;
      units.push_back({pos + 4, len, pos + 4 + len});
      pos += 4 + len;
    }
  }
  consumed = pos;
  return units;
}

}  // namespace

// REQUIRES: mutex_ held (for all below).
std::optional<WaiterId> Engine::writeBatch(Handle& h, std::string_view data, bool nonblock, const Caller& who,
                                           WriteCompletion& done, After& after) {
  auto finish = [&](Result<size_t> r) -> std::optional<WaiterId> {
    after.push_back([d = std::move(done), r] { d(r); });
    return std::nullopt;
  };
  Mailbox& box = *h.box;
  if (box.removed) return finish(fail(EIDRM));
  if (data.empty()) return finish(size_t{0});
  h.writerPid = who.pid;  // for a final line delivered at close
  h.writerUid = who.uid;
  h.writerGid = who.gid;
  const size_t prefix = h.draft.size();  // an incomplete unit from earlier writes
  std::string buf = h.draft;
  buf.append(data);
  size_t consumed = 0;
  auto units = splitUnits(h.batch, buf, box.maxMsgSize, consumed);
  if (!units) {
    h.draft.clear();  // the message being composed is dropped whole
    return finish(fail(units.error()));
  }
  std::string leftover = buf.substr(consumed);
  if (units->empty()) {
    h.draft = std::move(leftover);
    return finish(data.size());
  }
  uint64_t payload = 0;
  for (const Unit& u : *units) payload += u.length;
  if (auto r = reserveBytes(payload); !r) {
    h.draft.clear();
    return finish(fail(r.error()));
  }

  std::deque<MessagePtr> msgs;
  std::vector<size_t> ends;  // bytes of this write consumed once message i has entered
  for (const Unit& u : *units) {
    auto msg = detail::makeMessage(std::string_view(buf).substr(u.start, u.length));
    msg->uid = nextMessageUid_++;
    msg->senderPid = who.pid;
    msg->uid_ = who.uid;
    msg->gid = who.gid;
    msgs.push_back(std::move(msg));
    ends.push_back(u.end - prefix);
  }
  // Enter what fits now (behind no earlier blocked sender): into the queue, or straight
  // into a waiting receiver's hands.
  size_t entered = 0;
  // All that fit enter before any receiver is served: a waiting batch reader gets the
  // write's lines together.
  while (!box.remote && !msgs.empty() && box.senders.empty() && hasRoom(box)) {
    MessagePtr msg = std::move(msgs.front());
    msgs.pop_front();
    assignSeqAndName(box, *msg);
    enqueueTail(box, msg, after);
    ++entered;
  }
  dispatch(box, after);
  if (msgs.empty()) {
    h.draft = std::move(leftover);
    return finish(data.size());
  }
  // The rest waits behind earlier blocked senders, or for room; waiting receivers may
  // take straight from it (capacity 0: sender and receiver meet).
  Waiter w;
  w.kind = WaitKind::SendBatch;
  w.fh = h.fh;
  w.onWrite = std::move(done);
  w.batch = std::move(msgs);
  w.batchEnds = std::move(ends);
  w.batchEntered = entered;
  w.batchTotal = data.size();
  w.leftover = std::move(leftover);
  h.draft.clear();
  w.nonblock = nonblock;
  const WaiterId id = parkWaiter(box, box.senders, std::move(w));
  if (box.remote) {  // pushed by this thread once unlocked, or by the one already at it
    serveRemoteHere(h.box, after);
    return id;
  }
  wakePollers(box, after);  // a blocked sender makes .receive* readable at capacity 0
  dispatch(box, after);
  auto mine = std::find_if(box.senders.begin(), box.senders.end(), [&](const Waiter& x) { return x.id == id; });
  if (mine == box.senders.end() || !nonblock) return id;  // done already, or waits
  // Non-blocking: what entered is written (a short count), the rest is not queued.
  Waiter rest = std::move(*mine);
  box.senders.erase(mine);
  waiterHomes_.erase(id);
  --sendersWaiting_;
  for (const auto& m : rest.batch) releaseBytes(m->size());
  Result<size_t> r = rest.batchEntered > 0 ? Result<size_t>(rest.batchEnds[rest.batchEntered - 1])
                                           : Result<size_t>(fail(EAGAIN));
  after.push_back([d = std::move(rest.onWrite), r] { d(r); });
  return std::nullopt;
}

// Whole messages that fit in `size` bytes, at least one; EMSGSIZE (and nothing taken)
// if the first does not fit. REQUIRES: canTake(box).
Result<Bytes> Engine::takeBatch(Mailbox& box, Handle& h, size_t size, pid_t reader, After& after) {
  const size_t overhead = h.batch == Batch::Lines ? 1 : 4;
  auto out = std::make_shared<std::string>();
  while (canTake(box)) {
    const size_t need = peekNext(box)->size() + overhead;
    if (out->size() + need > size) {
      if (out->empty()) return fail(EMSGSIZE);
      break;
    }
    MessagePtr msg = popNext(box, after);
    if (h.batch == Batch::Lines) {
      out->append(msg->payload());
      out->push_back('\n');
    } else {
      appendLength(*out, msg->size());
      out->append(msg->payload());
    }
    finishTaken(box, msg, h, reader, after);
    admitSenders(box, after);  // taking made room
  }
  return Bytes::slice(out, 0, out->size());
}

// close()/fsync() of a batch sender: a final incomplete line is a message; an incomplete
// frame cannot be one (EINVAL, dropped).
std::optional<WaiterId> Engine::flushBatch(Handle& h, StatusCompletion done, After& after) {
  auto finish = [&](Status r) -> std::optional<WaiterId> {
    if (done) after.push_back([d = std::move(done), r] { d(r); });
    return std::nullopt;
  };
  if (h.draft.empty()) return finish({});
  if (h.batch == Batch::Frames) {
    h.draft.clear();
    return finish(fail(EINVAL));
  }
  if (auto r = reserveBytes(h.draft.size()); !r) {
    h.draft.clear();
    if (!done) ++discarded_;
    return finish(fail(r.error()));
  }
  auto msg = detail::makeMessage(std::move(h.draft));
  msg->uid = nextMessageUid_++;
  msg->senderPid = h.writerPid;
  msg->uid_ = h.writerUid;
  msg->gid = h.writerGid;
  h.draft.clear();
  return send(h, msg, std::move(done), {}, 0, after);
}

}  // namespace ipcfs
