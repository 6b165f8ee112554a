// Durable mode (--state-dir): what the engine's records say, loading a state directory,
// snapshots, and holding acknowledgements back until what they acknowledge is on disk.
//
// Every change that must survive a crash appends one record, under the engine mutex
// (journal.hpp writes them in group commits). The completions of the call that appended them
// run once they are on disk (commit()): a send's close/fsync, the read that takes a message's
// last bytes (so a message read to the end is never delivered again), a semaphore post or
// wait. Calls answered by their return value (mkdir, setxattr, rename, ...) wait (commitSync()).
// A read that returns part of a message first records that the message is being taken, so if
// the daemon dies the message comes back with user.ipc.redeliveries counted.
//
// Kept: mailboxes (name, id, mode, owner, times, capacity, policy, max_msg_size, next sequence
// number), their queued messages (payload, name, seq, sender, owner, mode, times,
// redeliveries, place in the queue), semaphores and their values, shm/ segments (contents as
// of the last flush, fsync or release: one file each), pipes/ nodes and subdirectories. Not
// kept: inboxes (processes do not survive a restart), waiters, open files, bytes in duplex
// pipes, a message still being written, statistics.
#include <algorithm>
#include <cerrno>

#include <fmt/format.h>

#include "ipcfs/engine.hpp"
#include "ipcfs/inode.hpp"
#include "journal.hpp"
#include "objects.hpp"

namespace ipcfs {

using detail::Mailbox;
using detail::Message;
using detail::MessageState;
using durable::Decoder;
using durable::Encoder;

namespace {

enum Rec : uint8_t {
  kCounters = 1,  // snapshots only: the next ids to give
  kMailbox = 2,
  kMailboxGone = 3,
  kMessage = 4,       // a whole message entering a mailbox
  kMessagePlace = 5,  // its mailbox, name, place, redeliveries and whether it is being taken
  kMessageAttrs = 6,  // its mode, owner and times
  kMessageGone = 7,
  kSegment = 8,
  kSegmentGone = 9,
  kSemaphore = 10,
  kSemaphoreGone = 11,
  kPipe = 12,
  kPipeGone = 13,
  kPipeDir = 14,
  kPipeDirGone = 15,
};

// [u8 type][u64 length][body] with the body encoded in place.
template <class F>
void appendEncoded(std::string& out, uint8_t type, F&& encode) {
  const size_t start = out.size();
  out.push_back(static_cast<char>(type));
  out.append(8, '\0');
  encode(out);
  std::string len;
  Encoder(len).u64(out.size() - start - durable::kRecordHeader);
  out.replace(start + 1, 8, len);
}

struct Attrs {
  mode_t mode = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  timespec atime{}, mtime{}, ctime{};
};

void encodeAttrs(Encoder& e, mode_t mode, uid_t uid, gid_t gid, const timespec& a, const timespec& m,
                 const timespec& c) {
  e.u32(mode);
  e.u32(uid);
  e.u32(gid);
  e.time(a);
  e.time(m);
  e.time(c);
}

Attrs decodeAttrs(Decoder& d) {
  Attrs a;
  a.mode = d.u32() & 07777;
  a.uid = d.u32();
  a.gid = d.u32();
  a.atime = d.time();
  a.mtime = d.time();
  a.ctime = d.time();
  return a;
}

// Objects with an id, a name, a mode, an owner and times.
template <class O>
void encodeNamed(std::string& out, const O& o) {
  Encoder e(out);
  e.u64(o.id);
  e.bytes(o.name);
  encodeAttrs(e, o.mode, o.uid, o.gid, o.atime, o.mtime, o.ctime);
}

template <class O>
void applyAttrs(O& o, const Attrs& a) {
  o.mode = a.mode;
  o.uid = a.uid;
  o.gid = a.gid;
  o.atime = a.atime;
  o.mtime = a.mtime;
  o.ctime = a.ctime;
}

void encodeMailbox(std::string& out, const Mailbox& box) {
  encodeNamed(out, box);
  Encoder e(out);
  e.u64(box.maxMsgSize);
  e.u64(box.capacity);
  e.u8(static_cast<uint8_t>(box.policy));
  e.u64(box.nextSeq);
}

// `taken`: whether a reader's taking it is on record (msg.takenJournaled unless told).
void encodeMessage(std::string& out, uint64_t boxId, const Message& msg, bool whole, bool taken) {
  Encoder e(out);
  e.u64(msg.uid);
  e.u64(boxId);
  e.u64(msg.seq);
  e.i64(msg.order);
  e.bytes(msg.name());
  e.i64(msg.senderPid);
  e.u32(msg.redeliveries());
  e.u8(taken ? 1 : 0);
  if (!whole) return;
  encodeAttrs(e, msg.mode, msg.uid_, msg.gid, msg.atime(), msg.mtime(), msg.ctime());
  e.bytes(msg.payload());
}

void encodeMessage(std::string& out, uint64_t boxId, const Message& msg, bool whole) {
  encodeMessage(out, boxId, msg, whole, msg.takenJournaled);
}

void encodeMessageAttrs(std::string& out, const Message& msg) {
  Encoder e(out);
  e.u64(msg.uid);
  encodeAttrs(e, msg.mode, msg.uid_, msg.gid, msg.atime(), msg.mtime(), msg.ctime());
}

void encodeId(std::string& out, uint64_t id) { Encoder(out).u64(id); }

void encodeSegment(std::string& out, const detail::Segment& s) { encodeNamed(out, s); }

void encodeSemaphore(std::string& out, const detail::Semaphore& s) {
  encodeNamed(out, s);
  Encoder(out).u64(s.value);
}

void encodePipe(std::string& out, const detail::Pipe& p) {
  encodeNamed(out, p);
  Encoder e(out);
  e.u64(p.dir);
  e.u8(p.fifo ? 1 : 0);
}

void encodePipeDir(std::string& out, const detail::PipeDir& d) {
  encodeNamed(out, d);
  Encoder(out).u64(d.dir);
}

}  // namespace

// ------------------------------------------------------------------ lifetime

Engine::Engine(Limits limits, std::shared_ptr<ProcessTable> processes)
    : limits_(limits),
      processes_(std::move(processes)),
      messages_(std::make_unique<detail::MessageTable>(detail::MessageTable::Key::Uid)) {}

Engine::~Engine() {
  stopBackend();
  closeStateDir();
}

struct Engine::LoadContext {
  std::unordered_map<uint64_t, MailboxPtr> boxOf;  // message uid -> its mailbox
  std::unordered_map<uint64_t, size_t> messagesIn;  // mailbox id -> messages recorded into it
  std::string where;
  uint64_t record = 0;
};

namespace {

// Counts the messages recorded into each mailbox, so that the indexes are sized once
// (a million messages rehashed step by step cost more than reading them).
void countMessages(std::string_view records, std::unordered_map<uint64_t, size_t>& perBox) {
  (void)durable::forEachRecord(records, [&](const durable::Record& r) {
    if (r.type == kMessage) {
      Decoder d(r.body);
      d.u64();
      ++perBox[d.u64()];
    }
    return durable::Check{};
  });
}

}  // namespace

std::expected<std::string, std::string> Engine::openStateDir(const std::string& dir, StateDirOptions options) {
  durable::Journal::Loaded loaded;
  auto journal = durable::Journal::open(dir, {options.snapshotAfterBytes, std::move(options.onFatal)}, loaded);
  if (!journal) return std::unexpected(journal.error());
  std::lock_guard lock(mutex_);
  LoadContext ctx;
  countMessages(loaded.snapshotRecords, ctx.messagesIn);
  countMessages(loaded.journalRecords, ctx.messagesIn);
  size_t total = 0;
  for (const auto& [id, n] : ctx.messagesIn) total += n;
  ctx.boxOf.reserve(total);
  messages_->reserve(total);
  auto replay = [&](std::string_view records, std::string where) -> durable::Check {
    ctx.where = std::move(where);
    ctx.record = 0;
    return durable::forEachRecord(records, [&](const durable::Record& r) {
      ++ctx.record;
      return loadRecord(r.type, r.body, ctx);
    });
  };
  if (auto r = replay(loaded.snapshotRecords, dir + "/snapshot"); !r) return std::unexpected(r.error());
  if (auto r = replay(loaded.journalRecords, fmt::format("{}/journal.{}", dir, loaded.generation)); !r)
    return std::unexpected(r.error());
  journal_ = std::move(*journal);
  if (auto r = finishLoad(ctx); !r) {
    journal_.reset();
    return std::unexpected(r.error());
  }
  durable::Journal::takeThreadLsn();  // the repairs are written with the first commit
  return loaded.notes;
}

void Engine::startJournal() {
  if (journal_) journal_->start();
}

void Engine::closeStateDir() {
  if (!journal_) return;
  {
    std::lock_guard lock(mutex_);
    journal_->snapshot(snapshotRecords());
  }
  journal_->stop();
  journal_.reset();
}

// ------------------------------------------------------------------ completing calls

void Engine::commit(After& after) {
  if (!journal_) return run(after);
  const uint64_t lsn = durable::Journal::takeThreadLsn();
  if (lsn == 0) {
    run(after);
  } else {
    journal_->runWhenDurable(lsn, std::move(after));
    after.clear();
  }
  if (journal_->wantsSnapshot()) snapshotIfDue();
}

void Engine::commitSync(After& after) {
  if (journal_) {
    if (const uint64_t lsn = durable::Journal::takeThreadLsn(); lsn != 0) journal_->waitDurable(lsn);
    if (journal_->wantsSnapshot()) snapshotIfDue();
  }
  run(after);
}

void Engine::commitAll(After& after) {
  if (!journal_) return run(after);
  durable::Journal::takeThreadLsn();
  journal_->runWhenDurable(journal_->appended(), std::move(after));
  after.clear();
}

// The snapshot is made under the mutex, so that it is exactly the state after every record
// appended so far; the writer thread writes it.
void Engine::snapshotIfDue() {
  std::lock_guard lock(mutex_);
  if (journal_->wantsSnapshot()) journal_->snapshot(snapshotRecords());
}

std::string Engine::snapshotRecords() const {
  std::string out;
  appendEncoded(out, kCounters, [&](std::string& o) {
    Encoder e(o);
    e.u64(nextMailboxId_);
    e.u64(nextShmSemId_);
    e.u64(nextMessageUid_);
  });
  for (const auto& [id, box] : mailboxesById_) {
    appendEncoded(out, kMailbox, [&](std::string& o) { encodeMailbox(o, *box); });
    for (const auto& msg : box->queue)
      appendEncoded(out, kMessage, [&](std::string& o) { encodeMessage(o, id, *msg, true); });
  }
  // Messages being read, or read to the end and not confirmed: they come back at the next
  // start, counted as redelivered.
  for (const auto& [fh, h] : handles_) {
    if (h->kind != detail::HandleKind::Receiver || h->box->owner != 0 || h->box->removed) continue;
    auto keep = [&](const Message& msg) {
      if (!msg.journaled) return;
      appendEncoded(out, kMessage, [&](std::string& o) { encodeMessage(o, h->box->id, msg, true, true); });
    };
    if (h->current) keep(*h->current);
    for (const auto& msg : h->unconfirmed) keep(*msg);
  }
  for (const auto& [name, seg] : segments_) appendEncoded(out, kSegment, [&](std::string& o) { encodeSegment(o, *seg); });
  for (const auto& [name, sem] : semaphores_)
    appendEncoded(out, kSemaphore, [&](std::string& o) { encodeSemaphore(o, *sem); });
  for (const auto& [id, d] : pipeDirs_) appendEncoded(out, kPipeDir, [&](std::string& o) { encodePipeDir(o, *d); });
  for (const auto& [key, p] : pipes_) appendEncoded(out, kPipe, [&](std::string& o) { encodePipe(o, *p); });
  return out;
}

// ------------------------------------------------------------------ journaling

void Engine::journalPut(const Mailbox& box) {
  if (box.owner != 0) return;  // inboxes are not kept
  record_.clear();
  encodeMailbox(record_, box);
  journal_->append(kMailbox, record_);
}

void Engine::journalGone(const Mailbox& box) {
  if (box.owner != 0) return;
  record_.clear();
  encodeId(record_, box.id);
  journal_->append(kMailboxGone, record_);
}

void Engine::journalMessage(const Mailbox& box, Message& msg) {
  if (box.owner != 0) {  // forwarded into an inbox: no longer kept
    journalGone(msg);
    return;
  }
  record_.clear();
  encodeMessage(record_, box.id, msg, !msg.journaled);
  journal_->append(msg.journaled ? kMessagePlace : kMessage, record_);
  msg.journaled = true;
}

void Engine::journalHandedOver(Mailbox& box, Message& msg) {
  msg.order = ++box.tailKey;  // a place of its own, should it come back after a crash
  journalMessage(box, msg);
}

void Engine::journalTaken(const Mailbox& box, Message& msg) {
  if (!msg.journaled || msg.takenJournaled) return;
  msg.takenJournaled = true;
  journalMessage(box, msg);
}

void Engine::journalAttrs(const Message& msg) {
  if (!msg.journaled) return;
  record_.clear();
  encodeMessageAttrs(record_, msg);
  journal_->append(kMessageAttrs, record_);
}

void Engine::journalGone(Message& msg) {
  if (!msg.journaled) return;
  msg.journaled = false;
  msg.takenJournaled = false;
  record_.clear();
  encodeId(record_, msg.uid);
  journal_->append(kMessageGone, record_);
}

void Engine::awaitConfirmation(const Mailbox& box, const MessagePtr& msg, detail::Handle& h) {
  if (!msg->journaled) return;
  if (msg->size() == 0 && h.batch == detail::Batch::None) {
    journalGone(*msg);  // the read that took it returns its end: nothing more to confirm
    return;
  }
  journalTaken(box, *msg);
  h.unconfirmed.push_back(msg);
}

void Engine::confirmTaken(detail::Handle& h) {
  for (const auto& msg : h.unconfirmed) {
    if (msg->remoteSeq())
      queueRemote({RemoteJob::Kind::Ack, h.box->id, msg->remoteSeq(), msg->extra->remoteReader});
    else
      journalGone(*msg);
  }
  h.unconfirmed.clear();
}

void Engine::journalPut(const detail::Segment& seg) {
  record_.clear();
  encodeSegment(record_, seg);
  journal_->append(kSegment, record_);
}

void Engine::journalGone(const detail::Segment& seg) {
  record_.clear();
  encodeId(record_, seg.id);
  journal_->append(kSegmentGone, record_);
  // Its file goes once the record is on disk: a crash before leaves the segment whole.
  durable::Journal* j = journal_.get();
  journal_->runWhenDurable(journal_->appended(), {[j, id = seg.id] { j->removeSegment(id); }});
}

void Engine::journalPut(const detail::Semaphore& sem) {
  record_.clear();
  encodeSemaphore(record_, sem);
  journal_->append(kSemaphore, record_);
}

void Engine::journalGone(const detail::Semaphore& sem) {
  record_.clear();
  encodeId(record_, sem.id);
  journal_->append(kSemaphoreGone, record_);
}

void Engine::journalPut(const detail::Pipe& pipe) {
  record_.clear();
  encodePipe(record_, pipe);
  journal_->append(kPipe, record_);
}

void Engine::journalGone(const detail::Pipe& pipe) {
  record_.clear();
  encodeId(record_, pipe.id);
  journal_->append(kPipeGone, record_);
}

void Engine::journalPut(const detail::PipeDir& dir) {
  record_.clear();
  encodePipeDir(record_, dir);
  journal_->append(kPipeDir, record_);
}

void Engine::journalGone(const detail::PipeDir& dir) {
  record_.clear();
  encodeId(record_, dir.id);
  journal_->append(kPipeDirGone, record_);
}

std::optional<Engine::SegmentSave> Engine::segmentToSave(const std::shared_ptr<detail::Segment>& seg) {
  if (!journal_ || seg->unlinked || seg->version == seg->savedVersion) return std::nullopt;
  seg->savedVersion = seg->version;
  return SegmentSave{seg, seg->version, std::make_shared<const std::string>(seg->data)};
}

Status Engine::saveSegment(const SegmentSave& save) {
  if (journal_->writeSegment(save.segment->id, save.version, *save.data)) return {};
  std::lock_guard lock(mutex_);
  save.segment->savedVersion = 0;  // written again at the next flush
  return fail(EIO);
}

// ------------------------------------------------------------------ loading

namespace {

// Finds or makes the object with `id` in a by-id map and a by-name map whose keys `keyOf`
// gives, renaming it if its key changed. Error text if the new key is another object's.
template <class O, class ById, class ByName, class Key>
std::expected<std::shared_ptr<O>, std::string> upsert(ById& byId, ByName& byName, uint64_t id, const Key& key,
                                                      Key (*keyOf)(const O&)) {
  std::shared_ptr<O> obj;
  if (auto it = byId.find(id); it != byId.end()) obj = it->second;
  if (auto taken = byName.find(key); taken != byName.end() && taken->second != obj)
    return std::unexpected(fmt::format("two objects with one name (ids {} and {})", taken->second->id, id));
  if (obj) {
    byName.erase(keyOf(*obj));
  } else {
    obj = std::make_shared<O>();
    obj->id = id;
    byId.emplace(id, obj);
  }
  return obj;
}

std::string nameKey(const detail::Segment& s) { return s.name; }
std::string nameKey(const detail::Semaphore& s) { return s.name; }

}  // namespace

std::expected<void, std::string> Engine::loadRecord(uint8_t type, std::string_view body, LoadContext& ctx) {
  Decoder d(body);
  auto bad = [&](const std::string& what) -> std::expected<void, std::string> {
    return std::unexpected(fmt::format("{}, record {}: {}", ctx.where, ctx.record, what));
  };
  After none;
  switch (type) {
    case kCounters:
      nextMailboxId_ = std::max(nextMailboxId_, d.u64());
      nextShmSemId_ = std::max(nextShmSemId_, d.u64());
      nextMessageUid_ = std::max(nextMessageUid_, d.u64());
      break;
    case kMailbox: {
      const uint64_t id = d.u64();
      const std::string name(d.bytes());
      const Attrs a = decodeAttrs(d);
      const uint64_t maxMsgSize = d.u64(), capacity = d.u64();
      const uint8_t policy = d.u8();
      const uint64_t nextSeq = d.u64();
      if (!d.ok() || policy > static_cast<uint8_t>(detail::Policy::Pair) || name.empty())
        return bad("malformed mailbox");
      MailboxPtr box;
      if (auto it = mailboxesById_.find(id); it != mailboxesById_.end()) box = it->second;
      if (auto taken = mailboxesByName_.find(name); taken != mailboxesByName_.end() && taken->second != box)
        return bad(fmt::format("two mailboxes named '{}'", name));
      if (box) {
        mailboxesByName_.erase(box->name);
      } else {
        box = std::make_shared<Mailbox>();
        box->id = id;
        if (auto n = ctx.messagesIn.find(id); n != ctx.messagesIn.end()) box->bySeq.reserve(n->second);
        mailboxesById_.emplace(id, box);
      }
      box->name = name;
      mailboxesByName_.emplace(box->name, box);
      applyAttrs(*box, a);
      box->maxMsgSize = maxMsgSize;
      box->capacity = capacity;
      box->policy = static_cast<detail::Policy>(policy);
      box->nextSeq = std::max(box->nextSeq, nextSeq);
      nextMailboxId_ = std::max(nextMailboxId_, id + 1);
      break;
    }
    case kMailboxGone: {
      const uint64_t id = d.u64();
      auto it = mailboxesById_.find(id);
      if (it == mailboxesById_.end()) return bad(fmt::format("removal of unknown mailbox {}", id));
      if (!it->second->byName.empty() || !it->second->bySeq.empty()) return bad(fmt::format("removal of mailbox {} that holds messages", id));
      mailboxesByName_.erase(it->second->name);
      mailboxesById_.erase(it);
      break;
    }
    case kMessage:
    case kMessagePlace: {
      const uint64_t uid = d.u64(), boxId = d.u64(), seq = d.u64();
      const int64_t order = d.i64();
      const std::string name(d.bytes());
      const auto senderPid = static_cast<pid_t>(d.i64());
      const uint32_t redeliveries = d.u32();
      const bool taken = d.u8() != 0;
      auto to = mailboxesById_.find(boxId);
      if (to == mailboxesById_.end()) return bad(fmt::format("message {} in unknown mailbox {}", uid, boxId));
      Mailbox& box = *to->second;
      MessagePtr msg;
      if (type == kMessage) {
        const Attrs a = decodeAttrs(d);
        const std::string_view payload = d.bytes();
        if (!d.ok()) return bad("malformed message");
        if (ctx.boxOf.contains(uid)) return bad(fmt::format("message {} recorded twice", uid));
        msg = detail::makeMessage(payload);
        msg->uid = uid;
        msg->mode = static_cast<uint16_t>(a.mode);
        msg->uid_ = a.uid;
        msg->gid = a.gid;
        msg->setTimes(a.atime, a.mtime, a.ctime);
        bytesUsed_ += msg->size();
      } else {
        auto from = ctx.boxOf.find(uid);
        detail::Message* found = messages_->find(uid);
        if (from == ctx.boxOf.end() || !found) return bad(fmt::format("unknown message {}", uid));
        msg = *detail::queuePosition(*from->second, found->order);
        unqueue(*from->second, msg);
      }
      if (!d.ok()) return bad("malformed message");
      if (detail::findByName(box, name)) return bad(fmt::format("two messages named '{}' in mailbox {}", name, boxId));
      if (detail::queuePosition(box, order) != box.queue.end())
        return bad(fmt::format("two messages at one place in mailbox {}", boxId));
      msg->seq = seq;
      if (name != detail::seqName(seq)) {
        msg->setName(name);
      } else if (msg->extra) {
        msg->extra->name.clear();
      }
      msg->senderPid = senderPid;
      msg->setRedeliveries(redeliveries);
      msg->journaled = true;
      msg->takenJournaled = taken;
      enqueueAt(box, msg, order, none);
      box.tailKey = std::max(box.tailKey, order);
      box.headKey = std::min(box.headKey, order);
      box.nextSeq = std::max(box.nextSeq, seq + 1);
      nextMessageUid_ = std::max(nextMessageUid_, uid + 1);
      ctx.boxOf[uid] = to->second;
      break;
    }
    case kMessageAttrs: {
      const uint64_t uid = d.u64();
      const Attrs a = decodeAttrs(d);
      detail::Message* found = messages_->find(uid);
      if (!found) return bad(fmt::format("attributes of unknown message {}", uid));
      Message& msg = *found;
      msg.mode = static_cast<uint16_t>(a.mode);
      msg.uid_ = a.uid;
      msg.gid = a.gid;
      msg.setTimes(a.atime, a.mtime, a.ctime);
      break;
    }
    case kMessageGone: {
      const uint64_t uid = d.u64();
      auto from = ctx.boxOf.find(uid);
      detail::Message* found = messages_->find(uid);
      if (from == ctx.boxOf.end() || !found) return bad(fmt::format("removal of unknown message {}", uid));
      MessagePtr msg = *detail::queuePosition(*from->second, found->order);
      unqueue(*from->second, msg);
      releaseBytes(msg->size());
      ctx.boxOf.erase(from);
      break;
    }
    case kSegment:
    case kSemaphore: {
      const uint64_t id = d.u64();
      const std::string name(d.bytes());
      const Attrs a = decodeAttrs(d);
      const uint64_t value = type == kSemaphore ? d.u64() : 0;
      if (!d.ok() || name.empty() || value > kSemValueMax) return bad("malformed shm/ or sem/ object");
      if (type == kSegment) {
        auto seg = upsert<detail::Segment>(segmentsById_, segments_, id, name, &nameKey);
        if (!seg) return bad(seg.error());
        (*seg)->name = name;
        applyAttrs(**seg, a);
        segments_.emplace(name, *seg);
      } else {
        auto sem = upsert<detail::Semaphore>(semaphoresById_, semaphores_, id, name, &nameKey);
        if (!sem) return bad(sem.error());
        (*sem)->name = name;
        applyAttrs(**sem, a);
        (*sem)->value = value;
        semaphores_.emplace(name, *sem);
      }
      nextShmSemId_ = std::max(nextShmSemId_, id + 1);
      break;
    }
    case kSegmentGone:
    case kSemaphoreGone: {
      const uint64_t id = d.u64();
      auto forget = [&](auto& byId, auto& byName) {
        auto it = byId.find(id);
        if (it == byId.end()) return false;
        byName.erase(it->second->name);
        byId.erase(it);
        return true;
      };
      if (!(type == kSegmentGone ? forget(segmentsById_, segments_) : forget(semaphoresById_, semaphores_)))
        return bad(fmt::format("removal of unknown object {}", id));
      break;
    }
    case kPipe:
    case kPipeDir: {
      const uint64_t id = d.u64();
      const std::string name(d.bytes());
      const Attrs a = decodeAttrs(d);
      const uint64_t dir = d.u64();
      const bool fifo = type == kPipe && d.u8() != 0;
      if (!d.ok() || name.empty()) return bad("malformed pipes/ node");
      const PipeKey key{dir, name};
      auto taken = [&](const auto& byKey) {
        auto it = byKey.find(key);
        return it != byKey.end() && it->second->id != id;
      };
      if (taken(pipes_) || taken(pipeDirNames_)) return bad(fmt::format("two pipes/ nodes named '{}'", name));
      if (type == kPipe) {
        std::shared_ptr<detail::Pipe> p;
        if (auto it = pipesById_.find(id); it != pipesById_.end()) {
          p = it->second;
          pipes_.erase(PipeKey{p->dir, p->name});
        } else {
          p = std::make_shared<detail::Pipe>();
          p->id = id;
          pipesById_.emplace(id, p);
        }
        p->dir = dir;
        p->name = name;
        p->fifo = fifo;
        applyAttrs(*p, a);
        pipes_.emplace(key, p);
      } else {
        std::shared_ptr<detail::PipeDir> pd;
        if (auto it = pipeDirs_.find(id); it != pipeDirs_.end()) {
          pd = it->second;
          pipeDirNames_.erase(PipeKey{pd->dir, pd->name});
        } else {
          pd = std::make_shared<detail::PipeDir>();
          pd->id = id;
          pipeDirs_.emplace(id, pd);
        }
        pd->dir = dir;
        pd->name = name;
        applyAttrs(*pd, a);
        pipeDirNames_.emplace(key, pd);
      }
      nextShmSemId_ = std::max(nextShmSemId_, id + 1);
      break;
    }
    case kPipeGone: {
      const uint64_t id = d.u64();
      auto it = pipesById_.find(id);
      if (it == pipesById_.end()) return bad(fmt::format("removal of unknown pipe {}", id));
      pipes_.erase(PipeKey{it->second->dir, it->second->name});
      pipesById_.erase(it);
      break;
    }
    case kPipeDirGone: {
      const uint64_t id = d.u64();
      auto it = pipeDirs_.find(id);
      if (it == pipeDirs_.end()) return bad(fmt::format("removal of unknown pipes/ directory {}", id));
      pipeDirNames_.erase(PipeKey{it->second->dir, it->second->name});
      pipeDirs_.erase(it);
      break;
    }
    default:
      return bad(fmt::format("unknown record type {}", type));
  }
  if (!d.ok() || !d.atEnd()) return bad(fmt::format("malformed record of type {}", type));
  return {};
}

// After the last record: check what records could not check alone, read shm/ contents, and
// give back messages that were being read when the daemon stopped (counted as redelivered).
std::expected<void, std::string> Engine::finishLoad(LoadContext& ctx) {
  (void)ctx;
  auto dirKnown = [&](uint64_t dir) {
    return dir == ino::kPipes || (ino::kindOf(dir) == ino::Kind::PipeDir && pipeDirs_.contains(ino::idOf(dir)));
  };
  for (const auto& [key, p] : pipes_)
    if (!dirKnown(key.first)) return std::unexpected(fmt::format("pipe '{}' is in an unknown directory", p->name));
  for (const auto& [key, pd] : pipeDirNames_)
    if (!dirKnown(key.first))
      return std::unexpected(fmt::format("pipes/ directory '{}' is in an unknown directory", pd->name));

  std::vector<uint64_t> segmentIds;
  for (auto& [id, seg] : segmentsById_) {
    auto data = journal_->readSegment(id);
    if (!data) return std::unexpected(data.error());
    seg->data = std::move(*data);
    bytesUsed_ += seg->data.size();
    segmentIds.push_back(id);
  }
  journal_->removeSegmentsExcept(segmentIds);

  After none;
  for (auto& [id, box] : mailboxesById_) {
    std::vector<MessagePtr> taken;
    for (const auto& msg : box->queue)
      if (msg->takenJournaled) taken.push_back(msg);
    // Back to the head in their order: the last goes in first.
    for (auto it = taken.rbegin(); it != taken.rend(); ++it) {
      const MessagePtr& msg = *it;
      unqueue(*box, msg);
      msg->takenJournaled = false;
      msg->redelivered();
      ++box->redelivered;
      ++messagesRedelivered_;
      requeueHead(*box, msg, none);
    }
  }
  return {};
}

}  // namespace ipcfs
