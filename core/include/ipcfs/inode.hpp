// Inode numbers are computed from what a node is, never allocated: the top byte is the
// node's kind, the rest the id of its object. Ids are never reused while the daemon's state
// lives, so inode numbers are stable and the adapter needs no inode table.
#pragma once

#include <cstdint>

namespace ipcfs::ino {

enum class Kind : uint8_t {
  Fixed = 0,          // root, the top-level directories, root .status
  Mailbox = 1,        // a mailbox directory; id = mailbox id
  Send = 2,           // control nodes of a mailbox; id = mailbox id
  Receive = 3,
  Status = 4,
  SendLines = 5,
  ReceiveLines = 6,
  SendFrames = 7,
  ReceiveFrames = 8,
  Message = 16,       // id = message uid (global, never reused)
  IdLink = 17,        // by-id/ID; id = mailbox id
  Segment = 18,       // shm/NAME; id = segment id
  Semaphore = 19,     // sem/NAME; id = semaphore id
  Pipe = 20,          // pipes/NAME (a FIFO node or a duplex pipe); id = pipe id
  PipeDir = 21,       // a plain directory inside pipes/; id = its id
  Inbox = 22,         // procs/PID, a process's inbox (a mailbox); id = mailbox id
  FromDir = 23,       // procs/PID/from/; id = the inbox's mailbox id
  From = 24,          // procs/PID/from/Q; id = fromId(inbox id, Q)
};

inline constexpr uint64_t kRoot = 1;  // FUSE_ROOT_ID
inline constexpr uint64_t kMailboxes = 2;
inline constexpr uint64_t kProcs = 3;
inline constexpr uint64_t kPipes = 4;
inline constexpr uint64_t kShm = 5;
inline constexpr uint64_t kSem = 6;
inline constexpr uint64_t kById = 7;
inline constexpr uint64_t kRootStatus = 8;
inline constexpr uint64_t kRootMetrics = 9;  // .metrics: Prometheus text format
inline constexpr uint64_t kProcsSelf = 10;   // procs/self

inline constexpr uint64_t kIdMask = (uint64_t{1} << 56) - 1;

constexpr uint64_t make(Kind kind, uint64_t id) { return (uint64_t{static_cast<uint8_t>(kind)} << 56) | (id & kIdMask); }
constexpr Kind kindOf(uint64_t ino) { return static_cast<Kind>(ino >> 56); }
constexpr uint64_t idOf(uint64_t ino) { return ino & kIdMask; }

// procs/PID/from/Q: the inbox's id and Q share the id bits (pids stay below 2^22, the
// kernel's PID_MAX_LIMIT).
inline constexpr unsigned kPidBits = 22;
constexpr uint64_t fromId(uint64_t inboxId, uint64_t pid) { return inboxId << kPidBits | pid; }
constexpr uint64_t inboxOfFrom(uint64_t id) { return id >> kPidBits; }
constexpr uint64_t pidOfFrom(uint64_t id) { return id & ((uint64_t{1} << kPidBits) - 1); }

// Nodes whose meaning depends on the calling process (procs/): handlers resolve the
// caller's thread group for them.
constexpr bool dependsOnCaller(uint64_t ino) {
  const Kind k = kindOf(ino);
  return ino == kProcs || ino == kProcsSelf || k == Kind::Inbox || k == Kind::FromDir || k == Kind::From;
}

}  // namespace ipcfs::ino
