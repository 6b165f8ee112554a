// The engine's objects. Plain data: every invariant is kept by Engine under its mutex.
#pragma once

#include <sys/types.h>
#include <time.h>

#include <cstdint>
#include <deque>
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

struct Message {
  uint64_t uid = 0;  // global, never reused: the inode number's id
  uint64_t seq = 0;  // per mailbox, assigned at delivery
  std::string name;
  std::shared_ptr<std::string> payload = std::make_shared<std::string>();  // immutable once queued
  MessageState state = MessageState::Composing;
  pid_t senderPid = 0;
  uid_t uid_ = 0;
  gid_t gid = 0;
  mode_t mode = 0444;
  timespec atime{}, mtime{}, ctime{};
  uint32_t redeliveries = 0;
  int64_t order = 0;  // key in Mailbox::queue while Queued
  uint64_t senderFh = 0;  // the .send file that sent it, for its receipt (0: none)
  // Inboxes only: the sender and its ancestors when it was sent (procs/P/from/Q matches Q
  // anywhere in it).
  std::shared_ptr<const std::vector<pid_t>> lineage;
  bool holdsPlace = false;  // a drop-in being written that took a place (Mailbox::reserved)
  // Durable mode: the journal holds the whole message; a reader's taking it is on record.
  bool journaled = false;
  bool takenJournaled = false;
  // --backend: its seq in the shared mailbox (0: a local message) and its redeliveries as
  // claimed, so that giving it back says whether it was cut short here.
  uint64_t remoteSeq = 0;
  uint32_t remoteRedeliveries = 0;
  pid_t remoteReader = 0;  // who read it to the end: named in its acknowledgement
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

  std::map<int64_t, std::shared_ptr<Message>> queue;  // receive order; head = begin()
  int64_t headKey = 0, tailKey = 0;
  std::map<uint64_t, std::shared_ptr<Message>> listed;  // by uid: stable readdir paging
  std::unordered_map<std::string, std::shared_ptr<Message>> byName;  // every state
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
  uint32_t waitingRegistered = 0;    // receivers the backend knows wait here
  // What the backend had queued at the last listing: listed and peekable here, never
  // received from here (receiving claims from the backend).
  std::vector<std::shared_ptr<Message>> remoteListing;
  // The backend's figures as of the last .status (queued and bytes: the shared queue's).
  uint64_t remoteMessages = 0, remoteBytes = 0;
};

// Whether `msg` was sent by `from` or one of its descendants (0 matches every message).
inline bool sentBy(const Message& msg, pid_t from) {
  if (from == 0 || msg.senderPid == from) return true;
  if (!msg.lineage) return false;
  for (pid_t p : *msg.lineage)
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
  std::shared_ptr<const std::string> snapshot;
};

}  // namespace ipcfs::detail
