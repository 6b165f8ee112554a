// Where shared state lives when ipcfs runs on many hosts (--backend): the mailboxes of
// mailboxes/, their queued messages and settings, and the semaphores of sem/. The engine
// keeps the semantics (open files, waiters, partial reads, receipts, policies); a Backend
// keeps the shared truth, and every daemon on the same backend sees the same objects.
//
// A message moves through the backend like this: push (into the shared queue, refused when
// full) -> claim (taken by one daemon for its receivers, under a lease that daemon renews)
// -> ack (read to the end and confirmed: gone) or giveBack (its reader left it: back to the
// head). A claim whose lease expires (its daemon died) comes back to the head, counted as a
// redelivery, at the next claim by anyone.
//
// Every call blocks its thread for at most the backend's timeout and fails with EIO when
// the backend cannot be reached. The engine never calls it with its lock held.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <expected>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "ipcfs/limits.hpp"
#include "ipcfs/result.hpp"

namespace ipcfs {

struct RemoteMailbox {
  uint64_t id = 0;
  std::string name;
  uint32_t mode = 0755;
  uint32_t uid = 0, gid = 0;
  int64_t ctimeNs = 0, mtimeNs = 0;
  uint64_t capacity = kUnlimited;
  std::string policy = "any";
  uint64_t maxMsgSize = kDefaultMaxMsgSize;
};

struct RemoteMessage {
  uint64_t seq = 0;
  std::string name;  // given by a drop-in file; empty: named after seq
  std::string payload;
  uint32_t pid = 0, uid = 0, gid = 0, mode = 0444;
  int64_t sentNs = 0;
  uint32_t redeliveries = 0;
  bool receipt = false;  // its sender waits for a receipt: acknowledging it says who took it
};

struct RemoteSemaphore {
  uint64_t id = 0;
  std::string name;
  uint32_t mode = 0644;
  uint32_t uid = 0, gid = 0;
  int64_t mtimeNs = 0;
  uint64_t value = 0;
};

// A shared mailbox's figures, for .status.
struct RemoteStats {
  uint64_t messages = 0, bytes = 0, claimed = 0;
  uint64_t sent = 0, received = 0, redelivered = 0;
};

// What another daemon changed: wakes waiters here, refreshes names.
struct BackendEvent {
  enum class Kind {
    Message,    // a message entered mailbox `id` (or came back to its head)
    Room,       // mailbox `id` has room again, or a receiver started waiting there
    Settings,   // mailbox `id`'s mode, owner or settings changed
    Semaphore,  // semaphore `id` was posted
    Namespace,  // a mailbox or semaphore was made, removed or renamed
    Delivered,  // message `seq` of mailbox `id` was received by process `pid` (a receipt)
    Up,         // the backend is reachable (again)
    Down,       // the backend is unreachable: calls fail with EIO
  } kind = Kind::Namespace;
  uint64_t id = 0;
  uint64_t seq = 0;  // Delivered
  uint32_t pid = 0;  // Delivered
};

class Backend {
 public:
  explicit Backend(uint32_t leaseMs) : leaseMs_(leaseMs) {}
  virtual ~Backend() = default;

  // A one-line description for the log ("redis://127.0.0.1:6379").
  virtual std::string describe() const = 0;

  // mailboxes/: names and ids; the rest of a mailbox comes with mailbox(id).
  virtual Result<std::vector<std::pair<std::string, uint64_t>>> mailboxIndex() = 0;
  virtual Result<RemoteMailbox> mailbox(uint64_t id) = 0;  // ENOENT
  // Gives the mailbox its id; EEXIST if the name is taken.
  virtual Result<RemoteMailbox> createMailbox(RemoteMailbox box) = 0;
  // Its queued messages go with it.
  virtual Status removeMailbox(const RemoteMailbox& box) = 0;
  // EEXIST if `to` is taken.
  virtual Status renameMailbox(uint64_t id, const std::string& from, const std::string& to) = 0;
  // Only the fields named: "mode" "uid" "gid" "ctime" "mtime" "capacity" "policy" "maxmsg"
  // (a concurrent change of another field on another host is kept).
  enum class Field { Mode, Owner, Times, Capacity, Policy, MaxMsgSize };
  virtual Status updateMailbox(const RemoteMailbox& box, const std::vector<Field>& fields) = 0;

  // Messages. `push` queues them in order while there is room, in one round trip: the
  // seqs of those that entered, and why the next did not (0: all entered; EAGAIN: no room,
  // full or, at capacity 0, no receiver waits anywhere; EEXIST: its name is taken).
  struct Pushed {
    std::vector<uint64_t> seqs;
    int refused = 0;
  };
  virtual Result<Pushed> push(uint64_t box, const std::vector<RemoteMessage>& msgs) = 0;
  virtual Result<std::vector<RemoteMessage>> claim(uint64_t box, size_t max) = 0;
  // Expired claims back to the head now (claims, listings and .status do it too).
  virtual Status reclaim(uint64_t box) = 0;
  // Read to the end and confirmed, by (seq, reader) -- the reader is named in a receipt, if
  // the sender wants one. `lost`: how many had lost their lease (someone else has them now).
  // Up to `thenClaim` more are claimed in the same round trip, as claim() would.
  struct Acked {
    size_t lost = 0;
    std::vector<RemoteMessage> claimed;
  };
  virtual Result<Acked> ack(uint64_t box, const std::vector<std::pair<uint64_t, uint32_t>>& taken,
                            size_t thenClaim) = 0;
  virtual Status giveBack(uint64_t box, uint64_t seq, bool redelivered) = 0;
  virtual Status renew(uint64_t box, const std::vector<uint64_t>& seqs) = 0;
  // How many receivers wait here for `box` (capacity 0 lets senders in for them).
  virtual Status setWaiting(uint64_t box, uint32_t receivers) = 0;
  uint32_t leaseMs() const { return leaseMs_; }
  virtual Result<std::vector<RemoteMessage>> queued(uint64_t box, size_t max) = 0;  // the first `max`
  virtual Result<RemoteMessage> peek(uint64_t box, const std::string& name) = 0;  // ENOENT
  virtual Status removeQueued(uint64_t box, const std::string& name) = 0;         // ENOENT
  virtual Result<RemoteStats> stats(uint64_t box) = 0;
  virtual Result<uint64_t> queueLength(uint64_t box) = 0;
  // Policy exclusive across hosts: process `pid` here holds `box` (renewed by calling again
  // within the lease); false: a process elsewhere holds it.
  virtual Result<bool> hold(uint64_t box, uint32_t pid) = 0;
  virtual Status unhold(uint64_t box, uint32_t pid) = 0;
  // Policy pair across hosts: process `pid` here is (still) one of the two bound to `box`
  // (renewed by calling again within the lease); false: two others are.
  virtual Result<bool> bind(uint64_t box, uint32_t pid) = 0;

  // sem/
  virtual Result<std::vector<RemoteSemaphore>> semaphores() = 0;
  virtual Result<RemoteSemaphore> semaphore(uint64_t id) = 0;  // ENOENT
  virtual Result<RemoteSemaphore> createSemaphore(RemoteSemaphore sem) = 0;  // EEXIST
  virtual Status removeSemaphore(const RemoteSemaphore& sem) = 0;
  virtual Status updateSemaphore(const RemoteSemaphore& sem) = 0;  // mode, owner
  // EEXIST if `to` is taken.
  virtual Status renameSemaphore(uint64_t id, const std::string& from, const std::string& to) = 0;
  virtual Result<uint64_t> post(uint64_t sem, uint64_t n) = 0;    // the new value; EOVERFLOW
  // One wait if the value is positive: the value after it; nullopt: it was 0.
  virtual Result<std::optional<uint64_t>> tryWait(uint64_t sem) = 0;

  // Starts delivering events (from a thread of the backend's own) until stop().
  virtual void listen(std::function<void(const BackendEvent&)> onEvent) = 0;
  // The last call did not reach the backend: callers that must not be held up by a timeout
  // (the FUSE threads) leave the data path to the worker until a call gets through again.
  virtual bool failing() const { return false; }
  virtual void stop() = 0;

 private:
  uint32_t leaseMs_;
};

struct RedisOptions {
  uint32_t timeoutMs = 1000;  // connect and reply: a call fails with EIO after this
  uint32_t leaseMs = 5000;    // a claim not renewed for this long is delivered again
};

// "redis://HOST:PORT" or "redis://HOST:PORT,HOST:PORT,..." (Redis Cluster seeds). Fails
// with a one-line message on a malformed address; an unreachable server is not an error
// here (calls fail with EIO until it is reachable).
std::expected<std::shared_ptr<Backend>, std::string> makeRedisBackend(const std::string& url,
                                                                      const RedisOptions& options);

}  // namespace ipcfs
