// The engine's objects. Plain data: every invariant is kept by Engine under its mutex.
#pragma once

#include <sys/types.h>
#include <time.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "ipcfs/engine.hpp"

namespace ipcfs::detail {

// chmod, chown and utimes on any object with mode, owner and times (the size, where an
// object has one, is its own business).
template <class Object>
void applyChange(Object& o, const AttrChange& change, const timespec& now) {
  if (change.mode) o.mode = *change.mode & 07777;
  if (change.uid) o.uid = *change.uid;
  if (change.gid) o.gid = *change.gid;
  if (change.atime) o.atime = *change.atime;
  if (change.mtime) o.mtime = *change.mtime;
  o.ctime = now;
}

enum class MessageState {
  Composing,  // a drop-in file being written: resolves by name, not listed, not receivable
  Queued,     // listed, receivable, peekable
  InFlight,   // taken by a receiver that has not read its last byte yet
};

// The rarer parts of a message, out of line: most messages are named by their sequence
// number, hold a small payload and keep equal times, and have none of these.
struct MessageExtra {
  std::string name;  // a name given by its sender or a rename; empty: named by seq
  bool hasBody = false;  // the payload is `body`, not inline
  std::string body;      // a drop-in's (written in place until delivered), or a large payload
  bool ownTimes = false;  // atime and ctime differ from mtime
  timespec atime{}, ctime{};
  uint32_t redeliveries = 0;
  // Inboxes only: the sender and its ancestors when it was sent (procs/P/from/Q matches Q
  // anywhere in it).
  std::shared_ptr<const std::vector<pid_t>> lineage;
  // --backend: its seq in the shared mailbox (0: a local message), its redeliveries as
  // claimed (so that giving it back says whether it was cut short here), and who read it
  // to the end (named in its acknowledgement, for a receipt).
  uint64_t remoteSeq = 0;
  uint32_t remoteRedeliveries = 0;
  pid_t remoteReader = 0;
};

// One message. Laid out for a million queued ones: a small payload lives in the same
// allocation as the message (see makeMessage), its name is derived from seq unless one was
// given, and one timestamp stands for three until they differ.
struct Message {
  uint64_t uid = 0;  // global, never reused: the inode number's id
  uint64_t seq = 0;  // per mailbox, assigned at delivery
  int64_t order = 0;      // key in Mailbox::queue while Queued
  uint64_t senderFh = 0;  // the .send file that sent it, for its receipt (0: none)
  std::unique_ptr<MessageExtra> extra;
  int64_t mtimeSec = 0;
  uint32_t mtimeNsec = 0;
  uint32_t inlineSize = 0;  // bytes of the inline payload, right after this object
  pid_t senderPid = 0;
  uid_t uid_ = 0;
  gid_t gid = 0;
  uint16_t mode = 0444;
  MessageState state = MessageState::Composing;
  bool holdsPlace : 1 = false;  // a drop-in being written that took a place (Mailbox::reserved)
  // Durable mode: the journal holds the whole message; a reader's taking it is on record.
  bool journaled : 1 = false;
  bool takenJournaled : 1 = false;

  Message() = default;
  Message(const Message&) = delete;
  Message& operator=(const Message&) = delete;

  // Immutable once queued.
  std::string_view payload() const {
    if (extra && extra->hasBody) return extra->body;
    return {reinterpret_cast<const char*>(this + 1), inlineSize};
  }
  size_t size() const { return payload().size(); }
  // A drop-in's bytes, written in place. REQUIRES: made by makeMessage with no payload.
  std::string& body() {
    MessageExtra& e = more();
    e.hasBody = true;
    return e.body;
  }

  bool namedBySeq() const { return !extra || extra->name.empty(); }
  std::string name() const;
  void setName(std::string given) { more().name = std::move(given); }

  timespec mtime() const { return {static_cast<time_t>(mtimeSec), static_cast<long>(mtimeNsec)}; }
  timespec atime() const { return extra && extra->ownTimes ? extra->atime : mtime(); }
  timespec ctime() const { return extra && extra->ownTimes ? extra->ctime : mtime(); }
  void setTimes(const timespec& a, const timespec& m, const timespec& c);
  void setTimes(const timespec& t) { setTimes(t, t, t); }

  uint32_t redeliveries() const { return extra ? extra->redeliveries : 0; }
  void redelivered() { ++more().redeliveries; }
  void setRedeliveries(uint32_t n) {
    if (n != 0 || extra) more().redeliveries = n;
  }
  const std::shared_ptr<const std::vector<pid_t>>& lineage() const {
    static const std::shared_ptr<const std::vector<pid_t>> kNone;
    return extra ? extra->lineage : kNone;
  }
  void setLineage(std::shared_ptr<const std::vector<pid_t>> l) { more().lineage = std::move(l); }
  uint64_t remoteSeq() const { return extra ? extra->remoteSeq : 0; }

  MessageExtra& more() {
    if (!extra) extra = std::make_unique<MessageExtra>();
    return *extra;
  }
};

inline bool sameTime(const timespec& a, const timespec& b) { return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec; }

inline void Message::setTimes(const timespec& a, const timespec& m, const timespec& c) {
  mtimeSec = m.tv_sec;
  mtimeNsec = static_cast<uint32_t>(m.tv_nsec);
  if (sameTime(a, m) && sameTime(c, m)) {
    if (extra) extra->ownTimes = false;
    return;
  }
  MessageExtra& e = more();
  e.ownTimes = true;
  e.atime = a;
  e.ctime = c;
}

// A new message holding `payload` (copied inline when small, else moved out of line).
std::shared_ptr<Message> makeMessage(std::string_view payload);
std::shared_ptr<Message> makeMessage(std::string&& payload);

// The name a message gets from its sequence number.
std::string seqName(uint64_t seq);

// An index of messages by uid or by seq: open addressing (Robin Hood) over the messages
// themselves (their key is read through the pointer), 8 bytes a slot. Keys are mostly
// consecutive, so the identity hash spreads them without collisions.
class MessageTable {
 public:
  enum class Key { Uid, Seq };
  explicit MessageTable(Key key) : key_(key) {}
  MessageTable(const MessageTable&) = delete;
  MessageTable& operator=(const MessageTable&) = delete;

  Message* find(uint64_t k) const;
  bool contains(uint64_t k) const { return find(k) != nullptr; }
  void insert(Message* m);           // REQUIRES: no message with its key is here
  void erase(const Message* m);      // no-op unless that very message is here
  void reserve(size_t n);
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }

 private:
  uint64_t keyOf(const Message* m) const { return key_ == Key::Uid ? m->uid : m->seq; }
  // (modulo, not a mask: the capacity grows by half, not by doubling, to waste less)
  size_t home(uint64_t k) const { return static_cast<size_t>(k % slots_.size()); }
  size_t next(size_t slot) const { return slot + 1 == slots_.size() ? 0 : slot + 1; }
  size_t distance(size_t slot) const;  // of the entry in `slot` from its home
  // The slot holding key `k` (and, if `m` is given, that very message); kNone if none.
  size_t slotOf(uint64_t k, const Message* m) const;
  void place(Message* m);  // REQUIRES: a free slot
  void rehash(size_t capacity);
  static constexpr size_t kNone = ~size_t{0};

  Key key_;
  std::vector<Message*> slots_;
  size_t size_ = 0;
};

// Batch nodes: .send-lines/.receive-lines (a message per line) and .send-frames /
// .receive-frames (4-byte little-endian length, then the payload).
enum class Batch : uint8_t { None, Lines, Frames };

enum class WaitKind {
  Receive,  // a read of .receive on an empty mailbox
  Send,     // a close/fsync (or receipt read) whose message waits for room or a receiver
  SendBatch,  // a write of a batch node whose messages wait, in order, for room
  Receipt,  // a read of .send (O_RDWR) waiting for its message's fate
};

struct Waiter {
  WaitKind kind{};
  WaiterId id = 0;
  uint64_t fh = 0;  // the open file (Receive, Send, Receipt)
  size_t size = 0;  // read size (Receive, Receipt)
  pid_t pid = 0;    // the reader (Receive)
  // --backend: O_NONBLOCK; parked only until the shared mailbox has answered (EAGAIN then).
  bool nonblock = false;
  ReadCompletion onRead;      // Receive, Receipt; Send started by a receipt read
  StatusCompletion onStatus;  // Send started by close/fsync
  std::shared_ptr<Message> msg;  // Send: the message waiting to enter
  // SendBatch: the write's messages still to enter, and what the write has consumed once
  // message i has entered (a short write if interrupted midway).
  WriteCompletion onWrite;
  std::deque<std::shared_ptr<Message>> batch;
  std::vector<size_t> batchEnds;
  size_t batchEntered = 0;
  size_t batchTotal = 0;
  std::string leftover;  // an incomplete line or frame, kept for the write that completes it
  // A duplex pipe write: the bytes still to go into the peer's buffer, and how many went.
  std::string data;
  size_t done = 0;
};

// Completes a waiter taken out of its list with an error.
inline std::function<void()> failWaiter(Waiter& w, int err) {
  return [onRead = std::move(w.onRead), onStatus = std::move(w.onStatus), onWrite = std::move(w.onWrite), err] {
    if (onRead) onRead(fail(err));
    if (onStatus) onStatus(fail(err));
    if (onWrite) onWrite(fail(err));
  };
}

enum class Policy { Any, Exclusive, Pair };

inline std::string_view policyName(Policy p) {
  switch (p) {
    case Policy::Exclusive: return "exclusive";
    case Policy::Pair: return "pair";
    default: return "any";
  }
}

struct BoundProcess {
  pid_t pid = 0;
  uint64_t instance = 0;  // ProcessStat::instance
};

struct Mailbox {
  uint64_t id = 0;
  std::string name;
  mode_t mode = 0755;
  uid_t uid = 0;
  gid_t gid = 0;
  timespec atime{}, mtime{}, ctime{};
  uint64_t maxMsgSize = kDefaultMaxMsgSize;
  uint64_t nextSeq = 1;
  bool removed = false;

  // Queued messages by Message::order: receive order, head = front(), and the listing
  // (readdir pages by order). Owns them.
  std::deque<std::shared_ptr<Message>> queue;
  int64_t headKey = 0, tailKey = 0;
  // Names taken, in every state (see findByName): given names here, names derived from seq
  // in bySeq.
  std::unordered_map<std::string, Message*> byName;
  MessageTable bySeq{MessageTable::Key::Seq};
  uint64_t queuedBytes = 0;
  uint64_t capacity = kUnlimited;  // queued messages (plus places taken by drop-ins being written)
  uint64_t reserved = 0;           // drop-ins being written that hold a place
  Policy policy = Policy::Any;
  std::map<pid_t, int> receiverOpens;  // open .receive files per process (exclusive)
  std::vector<BoundProcess> pair;      // at most two (pair)
  std::list<Waiter> receivers;  // longest-waiting first
  std::list<Waiter> senders;    // blocked senders, in arrival order
  std::list<Waiter> receipts;   // receipt reads waiting for their message's fate
  std::map<uint64_t, PollNotify> pollers;  // by handle

  uint64_t sent = 0, received = 0, redelivered = 0;

  // An inbox (procs/PID): the process instance it belongs to. 0 for a mailbox.
  pid_t owner = 0;
  uint64_t ownerInstance = 0;

  // --backend: the queue lives in the backend. `queue` then holds only messages claimed for
  // receivers here; `senders` holds messages waiting to be pushed (in order).
  bool remote = false;
  bool wakeQueued = false;           // a Wake job is pending for it
  bool serving = false;              // a thread is pushing and claiming for it (remote data path)
  bool serveAgain = false;           // ... and must go round again: more came meanwhile
  bool serveAgainAsTick = false;     // ... as the periodic retry (Engine::serveRemote)
  bool mayHaveQueued = true;         // false: the last claim emptied the shared queue, no event since
  uint32_t waitingRegistered = 0;    // receivers the backend knows wait here
  // What the backend had queued at the last listing: listed and peekable here, never
  // received from here (receiving claims from the backend).
  std::vector<std::shared_ptr<Message>> remoteListing;
  // The backend's figures as of the last .status (queued and bytes: the shared queue's).
  uint64_t remoteMessages = 0, remoteBytes = 0;
};

// The message holding `name` in `box` (queued, being read or being written), or null.
Message* findByName(const Mailbox& box, std::string_view name);
// Takes (gives back) the name of `msg` in `box`; erasing is a no-op unless `msg` holds it.
void addName(Mailbox& box, Message* msg);
void eraseName(Mailbox& box, const Message* msg);
// The place of a queued message in box.queue (end() if it is not there).
std::deque<std::shared_ptr<Message>>::iterator queuePosition(Mailbox& box, int64_t order);

// Whether `msg` was sent by `from` or one of its descendants (0 matches every message).
inline bool sentBy(const Message& msg, pid_t from) {
  if (from == 0 || msg.senderPid == from) return true;
  if (!msg.lineage()) return false;
  for (pid_t p : *msg.lineage())
    if (p == from) return true;
  return false;
}

// A shared-memory segment: a regular file whose page cache is the shared memory. The
// daemon holds the bytes the kernel writes back and serves them to new mappers.
struct Segment {
  uint64_t id = 0;
  std::string name;
  mode_t mode = 0644;
  uid_t uid = 0;
  gid_t gid = 0;
  timespec atime{}, mtime{}, ctime{};
  std::string data;
  bool unlinked = false;
  uint64_t version = 0;       // bumped by every change of `data`
  uint64_t savedVersion = 0;  // durable mode: the version written to the state directory
};

// A counting semaphore: reads at offset 0 wait (P), writes post (V).
struct Semaphore {
  uint64_t id = 0;
  std::string name;
  mode_t mode = 0644;
  uid_t uid = 0;
  gid_t gid = 0;
  timespec atime{}, mtime{}, ctime{};
  uint64_t value = 0;
  bool unlinked = false;
  bool remote = false;      // --backend: the value lives in the backend
  bool wakeQueued = false;  // a SemWake job is pending for it
  std::list<Waiter> waiters;               // longest-waiting first
  std::map<uint64_t, PollNotify> pollers;  // by handle
};

// A node in pipes/: a FIFO (the kernel's pipe code carries its bytes; the engine keeps
// only the node) or a duplex pipe, whose two ends are the first two opens.
struct PipeEnd {
  enum class State { Never, Open, Closed } state = State::Never;
  std::string inbound;               // written by the peer, waiting to be read here
  std::list<Waiter> readers;         // parked reads of this end
  std::list<Waiter> writers;         // parked writes from this end (peer's buffer full)
  std::map<uint64_t, PollNotify> pollers;
};

struct Pipe {
  uint64_t id = 0;
  uint64_t dir = 0;  // inode of the directory holding its name (pipes/ or a subdirectory)
  std::string name;
  mode_t mode = 0644;
  uid_t uid = 0;
  gid_t gid = 0;
  timespec atime{}, mtime{}, ctime{};
  bool fifo = false;
  bool unlinked = false;
  PipeEnd ends[2];
  uint64_t bytesMoved = 0;
};

// A plain directory inside pipes/, to organise pipes (and for tools such as stress-ng that
// make a working directory of their own).
struct PipeDir {
  uint64_t id = 0;
  uint64_t dir = 0;  // inode of the directory holding it
  std::string name;
  mode_t mode = 0755;
  uid_t uid = 0;
  gid_t gid = 0;
  timespec atime{}, mtime{}, ctime{};
};

enum class HandleKind { Sender, DropIn, Receiver, Snapshot, Segment, Semaphore, PipeEnd };

// One open file.
struct Handle {
  HandleKind kind{};
  uint64_t fh = 0;
  Batch batch = Batch::None;  // Sender, Receiver: a batch node
  std::shared_ptr<Mailbox> box;  // keeps a removed mailbox alive for its open files
  // Sender: the message being composed since the last delivery.
  std::string draft;
  bool composing = false;
  bool nonblock = false;  // O_NONBLOCK as of the last read or write (FLUSH does not carry flags)
  bool readsReceipts = false;  // Sender opened O_RDWR: reads return receipts, poll tracks them
  pid_t openerPid = 0;
  pid_t writerPid = 0;
  uid_t writerUid = 0;
  gid_t writerGid = 0;
  // DropIn: the named message being written.
  std::shared_ptr<Message> dropIn;
  bool written = false;
  bool delivered = false;
  bool discarded = false;  // unlinked while being written
  bool dropped = false;    // a write failed (EFBIG, ENOSPC): the draft was thrown away
  // Receiver.
  std::shared_ptr<Message> current;  // taken, not read to the end
  size_t offset = 0;
  bool atEnd = false;  // the last byte was read; the next read returns 0
  std::optional<WaiterId> parked;
  std::vector<std::shared_ptr<Message>> unconfirmed;  // durable mode: see Engine::awaitConfirmation
  // Shared mailboxes: the remote worker's tick of this reader's last read, and whether it has
  // read a message to its end before (one descriptor, message after message): see
  // Engine::giveBackLeftovers and Engine::confirmRemoteNow.
  uint64_t readTick = 0;
  bool streaming = false;
  // Shared mailboxes: an acknowledgement of what this reader read is on its way (started
  // once the reply with a message's last byte was out: Engine::confirmAfterReply). The read
  // of the end that comes meanwhile is kept in afterConfirm and run by the thread that
  // acknowledges, once done; any other read waits for it (Engine::remoteConfirmed_). A
  // failure is kept for the next read to report (confirmError, an errno).
  bool confirming = false;
  int confirmError = 0;
  std::function<void()> afterConfirm;
  pid_t from = 0;  // procs/P/from/Q: takes only messages sent by Q or its descendants
  // Sender (receipts): the last message sent and what became of it.
  uint64_t lastSentUid = 0;
  std::optional<std::string> receipt;  // set when its fate is known; returned once
  // Segment, Semaphore: the object, alive while open even if unlinked.
  std::shared_ptr<Segment> segment;
  std::shared_ptr<Semaphore> semaphore;
  // PipeEnd: the pipe, alive while open even if unlinked, and which end this is.
  std::shared_ptr<Pipe> pipe;
  int end = 0;
  // Snapshot: fixed bytes served by offset (message peeks, .status).
  Bytes snapshot;
};

}  // namespace ipcfs::detail
