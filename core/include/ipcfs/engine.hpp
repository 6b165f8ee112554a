// The IPC engine: owns every object, message, waiter and limit, and the namespace that
// shows them as files. No FUSE here: the adapter in fs/ translates requests into these calls.
//
// Blocking is expressed as completions: an operation that cannot proceed registers a waiter
// holding the caller's callback and returns its id; whichever thread later makes progress
// (a send, a cancel, shutdown) invokes the callback. No thread ever waits inside the engine.
//
// Thread safety: every public member may be called from any thread. One mutex guards all
// state; callbacks (completions and poll notifications) always run after it is released,
// on the thread whose call caused them, so they may call back into the engine.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "ipcfs/bytes.hpp"
#include "ipcfs/caller.hpp"
#include "ipcfs/limits.hpp"
#include "ipcfs/result.hpp"

namespace ipcfs {

namespace detail {
struct Mailbox;
struct Message;
struct Handle;
struct Waiter;
}  // namespace detail

using WaiterId = uint64_t;
using ReadCompletion = std::function<void(Result<Bytes>)>;
using PollNotify = std::function<void()>;  // one-shot: "look again"; dropped unfired on release

// How the adapter should open a file.
struct Opened {
  uint64_t fh = 0;
  bool directIo = true;     // no page cache: every read/write reaches the engine
  bool keepCache = false;   // page cache kept across opens (immutable contents)
  bool nonseekable = false;
};

// Attribute changes requested by setattr; unset members are left alone.
struct AttrChange {
  std::optional<mode_t> mode;
  std::optional<uid_t> uid;
  std::optional<gid_t> gid;
  std::optional<off_t> size;
  std::optional<timespec> atime;
  std::optional<timespec> mtime;
};

// One directory entry; `next` is the offset to resume after it.
struct DirEntry {
  std::string_view name;
  struct stat attr;
  uint64_t next;
};

class Engine {
 public:
  explicit Engine(Limits limits = {});
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Namespace.
  Result<struct stat> lookup(uint64_t parent, std::string_view name);
  Result<struct stat> getattr(uint64_t ino);
  Result<struct stat> setattr(uint64_t ino, const AttrChange& change);
  Result<std::string> readlink(uint64_t ino);
  // Calls `add` for entries from `offset` on (0 = start) until it returns false.
  Status readdir(uint64_t ino, uint64_t offset, const std::function<bool(const DirEntry&)>& add);
  Result<struct stat> mkdir(uint64_t parent, std::string_view name, mode_t mode, const Caller& who);
  Status rmdir(uint64_t parent, std::string_view name);
  Status unlink(uint64_t parent, std::string_view name);
  Status rename(uint64_t parent, std::string_view name, uint64_t newParent, std::string_view newName,
                unsigned flags);

  // Extended attributes (user.ipc.*).
  Result<std::string> getxattr(uint64_t ino, std::string_view name);
  Result<std::string> listxattr(uint64_t ino);  // NUL-separated names
  Status setxattr(uint64_t ino, std::string_view name, std::string_view value);
  Status removexattr(uint64_t ino, std::string_view name);

  // Files. `flags` are open(2) flags.
  Result<Opened> open(uint64_t ino, int flags, const Caller& who);
  Result<std::pair<struct stat, Opened>> create(uint64_t parent, std::string_view name, mode_t mode, int flags,
                                                const Caller& who);
  // Either calls `done` before returning (and returns nullopt) or parks a waiter and
  // returns its id; `done` then runs exactly once, from the thread that completes or
  // cancels it.
  std::optional<WaiterId> read(uint64_t fh, size_t size, off_t offset, bool nonblock, ReadCompletion done);
  Result<size_t> write(uint64_t fh, std::string_view data, off_t offset, const Caller& who);
  Status flush(uint64_t fh);  // a close() of one descriptor
  Status fsync(uint64_t fh);
  void release(uint64_t fh);  // the last close of the open file
  // Readable now? If not and `notify` is given, it is kept (replacing an earlier one of
  // this handle) and fired once when the handle may have become readable.
  Result<bool> poll(uint64_t fh, PollNotify notify);

  // Completes a parked waiter with EINTR; no-op if it already completed.
  void cancel(WaiterId id);
  // Completes every waiter with ESHUTDOWN and drops every poll notification.
  void shutdown();

  // Rendered `.status` of the whole daemon.
  std::string rootStatus();

 private:
  using After = std::vector<std::function<void()>>;
  using MailboxPtr = std::shared_ptr<detail::Mailbox>;
  using MessagePtr = std::shared_ptr<detail::Message>;

  // All REQUIRES: mutex_ held.
  MailboxPtr mailboxByIno(uint64_t ino) const;
  MailboxPtr mailboxById(uint64_t id) const;
  detail::Handle* handle(uint64_t fh);
  Result<struct stat> statOf(uint64_t ino) const;
  struct stat mailboxStat(const detail::Mailbox& box) const;
  struct stat messageStat(const detail::Message& msg) const;
  struct stat fixedDirStat(uint64_t ino) const;
  std::string renderRootStatus() const;
  std::string renderMailboxStatus(const detail::Mailbox& box) const;
  uint64_t addHandle(std::unique_ptr<detail::Handle> h);
  Status reserveBytes(uint64_t n);
  void releaseBytes(uint64_t n);
  Status deliver(const MailboxPtr& box, MessagePtr msg, After& after);
  void enqueueTail(detail::Mailbox& box, const MessagePtr& msg, After& after);
  void requeueHead(detail::Mailbox& box, const MessagePtr& msg, After& after);
  void unqueue(detail::Mailbox& box, const MessagePtr& msg);
  void takeHead(detail::Mailbox& box, detail::Handle& h);
  void dispatch(detail::Mailbox& box, After& after);
  Bytes takeChunk(detail::Handle& h, size_t size);
  void finishMessage(detail::Handle& h);
  void wakePollers(detail::Mailbox& box, After& after);
  Status commitSend(detail::Handle& h, After& after);
  Status commitDropIn(detail::Handle& h, After& after);
  void destroyMailbox(const MailboxPtr& box, After& after);
  static void run(After& after);

  const Limits limits_;
  // Lock order: mutex_ is a leaf; callbacks collected in `After` run after unlocking.
  mutable std::mutex mutex_;
  std::map<uint64_t, MailboxPtr> mailboxesById_;                  // GUARDED_BY(mutex_)
  std::map<std::string, MailboxPtr, std::less<>> mailboxesByName_;  // GUARDED_BY(mutex_)
  std::unordered_map<uint64_t, MessagePtr> messages_;             // listed or being written; GUARDED_BY(mutex_)
  std::unordered_map<uint64_t, std::unique_ptr<detail::Handle>> handles_;  // GUARDED_BY(mutex_)
  std::unordered_map<WaiterId, detail::Mailbox*> waiterHomes_;    // GUARDED_BY(mutex_)
  uint64_t nextMailboxId_ = 1;
  uint64_t nextMessageUid_ = 1;
  uint64_t nextHandle_ = 1;
  WaiterId nextWaiter_ = 1;
  uint64_t bytesUsed_ = 0;
  uint64_t queuedMessages_ = 0;
  uint64_t queuedBytes_ = 0;
  uint64_t receiversWaiting_ = 0;
  uint64_t discarded_ = 0;
  bool shutDown_ = false;
};

}  // namespace ipcfs
