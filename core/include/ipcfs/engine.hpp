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

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <expected>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "ipcfs/backend.hpp"
#include "ipcfs/bytes.hpp"
#include "ipcfs/caller.hpp"
#include "ipcfs/limits.hpp"
#include "ipcfs/process_table.hpp"
#include "ipcfs/result.hpp"

namespace ipcfs {

namespace durable {
class Journal;
}  // namespace durable

namespace detail {
struct Mailbox;
struct Segment;
struct Semaphore;
struct Pipe;
struct PipeDir;
struct Message;
class MessageTable;
struct Handle;
struct Waiter;
}  // namespace detail

using WaiterId = uint64_t;
struct Opened;
using ReadCompletion = std::function<void(Result<Bytes>)>;
using StatusCompletion = std::function<void(Status)>;
using WriteCompletion = std::function<void(Result<size_t>)>;
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

// Durable mode (--state-dir): see engine_durable.cpp.
struct StateDirOptions {
  uint64_t snapshotAfterBytes = uint64_t{64} << 20;  // journal size that triggers a snapshot
  // The journal cannot be written: told before the daemon stops (see durable::JournalOptions).
  std::function<void(const std::string&)> onFatal;
};

class Engine {
 public:
  explicit Engine(Limits limits = {}, std::shared_ptr<ProcessTable> processes = systemProcessTable());
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Namespace. `who` matters only in procs/ (inboxes are private to their process and
  // its descendants); the default caller is root, for tests and the daemon itself.
  Result<struct stat> lookup(uint64_t parent, std::string_view name, const Caller& who = {});
  Result<struct stat> getattr(uint64_t ino);
  Result<struct stat> setattr(uint64_t ino, const AttrChange& change);
  Result<std::string> readlink(uint64_t ino, const Caller& who = {});
  // Calls `add` for entries from `offset` on (0 = start) until it returns false.
  Status readdir(uint64_t ino, uint64_t offset, const std::function<bool(const DirEntry&)>& add,
                 const Caller& who = {});
  Result<struct stat> mkdir(uint64_t parent, std::string_view name, mode_t mode, const Caller& who);
  Status rmdir(uint64_t parent, std::string_view name);
  Status unlink(uint64_t parent, std::string_view name, const Caller& who = {});
  Status rename(uint64_t parent, std::string_view name, uint64_t newParent, std::string_view newName,
                unsigned flags, const Caller& who = {});

  // Extended attributes (user.ipc.*).
  Result<std::string> getxattr(uint64_t ino, std::string_view name);
  Result<std::string> listxattr(uint64_t ino);  // NUL-separated names
  Status setxattr(uint64_t ino, std::string_view name, std::string_view value);
  Status removexattr(uint64_t ino, std::string_view name);

  // Files. `flags` are open(2) flags.
  //
  // Calls that may block take a completion: they either call it before returning (and
  // return nullopt) or park a waiter and return its id; the completion then runs exactly
  // once, from the thread that completes or cancels the waiter.
  Result<Opened> open(uint64_t ino, int flags, const Caller& who);
  // A drop-in message file (or a shm/ segment, a sem/ semaphore). Never waits: on a full
  // mailbox a drop-in's delivery waits in close() instead (see engine_io.cpp).
  Result<std::pair<struct stat, Opened>> create(uint64_t parent, std::string_view name, mode_t mode, int flags,
                                                const Caller& who);
  // `reader` is the calling process (receipts name it).
  std::optional<WaiterId> read(uint64_t fh, size_t size, off_t offset, bool nonblock, pid_t reader,
                               ReadCompletion done);
  // --backend: call once a read's reply has reached the kernel (from whichever thread sent
  // it; never with mutex_ held). If it handed over a shared message's last byte, the message
  // is acknowledged now, while the reader asks for its end (which waits for the
  // acknowledgement): a round trip less per message on the receiving side. Never before the
  // reply: a daemon dying in between would have acknowledged bytes its reader never got.
  void confirmAfterReply(uint64_t fh);
  // Returns what was written; a write of a batch node waits while its messages do not fit.
  std::optional<WaiterId> write(uint64_t fh, std::string_view data, off_t offset, bool nonblock, const Caller& who,
                                WriteCompletion done);
  // A close() of one descriptor: delivers what was written since the last delivery,
  // waiting for room (or, at capacity 0, for a receiver).
  // `closerKilled`: the descriptor is being closed by the exit of a process that a signal
  // killed; what it was writing is then dropped, not sent.
  std::optional<WaiterId> flush(uint64_t fh, StatusCompletion done, bool closerKilled = false);
  std::optional<WaiterId> fsync(uint64_t fh, StatusCompletion done);
  void release(uint64_t fh);  // the last close of the open file
  // poll(2) events ready now (POLLIN, POLLOUT, POLLHUP...). A given `notify` is kept
  // (replacing an earlier one of this handle) and fired once at the next change that may
  // make the handle ready.
  Result<unsigned> poll(uint64_t fh, PollNotify notify);
  // A FIFO node in pipes/ (S_IFIFO only; other kinds and places: EPERM).
  Result<struct stat> mknod(uint64_t parent, std::string_view name, mode_t mode, const Caller& who);

  // Completes a parked waiter with EINTR (a blocked sender's message is then not
  // queued); no-op if it already completed.
  void cancel(WaiterId id);
  // Completes every waiter with ESHUTDOWN and drops every poll notification.
  void shutdown();
  // Retires the inboxes of processes that exited: queued messages discarded (counted),
  // waiters answered with EIDRM. The adapter calls it periodically; procs/ listings and
  // the root .status call it too.
  void reapExited();

  // Rendered `.status` of the whole daemon.
  std::string rootStatus();

  // Durable mode. Loads the state kept in `dir` into this engine (new: nothing made yet) and
  // journals every later change there. Returns notes for the log (a repaired torn tail; may
  // be empty), or a one-line error: `dir` unusable, in use by another daemon, or damaged.
  std::expected<std::string, std::string> openStateDir(const std::string& dir, StateDirOptions options = {});
  // Starts the journal's writer thread (a daemon does it once in the background: fork keeps
  // no threads). Before that, acknowledgements wait for a synchronous write.
  void startJournal();
  // Writes a final snapshot and stops the journal: after shutdown(). ~Engine does it too.
  void closeStateDir();

  // Many hosts (--backend): mailboxes/ and sem/ live in `backend`, shared with every daemon
  // on it; see engine_remote.cpp. Set before any request (not with a state directory).
  void useBackend(std::shared_ptr<Backend> backend);
  // Starts the worker that talks to the backend and the backend's events (after the
  // daemon forked, like startJournal).
  void startBackend();
  // Gives back what this daemon holds and stops the worker: after shutdown(). ~Engine too.
  void stopBackend();

  // Counts an error the adapter returned, by errno, for `.metrics`. Any thread, no lock.
  void recordError(int errnum) noexcept {
    if (errnum > 0 && static_cast<size_t>(errnum) < errors_.size()) errors_[static_cast<size_t>(errnum)]++;
  }

 private:
  using After = std::vector<std::function<void()>>;
  using MailboxPtr = std::shared_ptr<detail::Mailbox>;
  using MessagePtr = std::shared_ptr<detail::Message>;

  // The bodies of setattr and mkdir, which take mutex_; the public calls then commit.
  Result<struct stat> setattrUncommitted(uint64_t ino, const AttrChange& change);
  Result<struct stat> mkdirUncommitted(uint64_t parent, std::string_view name, mode_t mode, const Caller& who);
  Result<std::pair<struct stat, Opened>> createUncommitted(uint64_t parent, std::string_view name, mode_t mode,
                                                           int flags, const Caller& who);
  Result<struct stat> mknodUncommitted(uint64_t parent, std::string_view name, mode_t mode, const Caller& who);

  // All REQUIRES: mutex_ held.
  MailboxPtr mailboxByIno(uint64_t ino) const;
  MailboxPtr mailboxById(uint64_t id) const;
  detail::Handle* handle(uint64_t fh);
  Result<struct stat> statOf(uint64_t ino) const;
  struct stat mailboxStat(const detail::Mailbox& box) const;
  struct stat messageStat(const detail::Message& msg) const;
  struct stat fixedDirStat(uint64_t ino) const;
  std::string renderRootStatus() const;
  std::string renderMetrics() const;
  std::string renderMailboxStatus(const detail::Mailbox& box) const;
  uint64_t addHandle(std::unique_ptr<detail::Handle> h);
  Status reserveBytes(uint64_t n);
  void releaseBytes(uint64_t n);
  void enqueueTail(detail::Mailbox& box, const MessagePtr& msg, After& after);
  void requeueHead(detail::Mailbox& box, const MessagePtr& msg, After& after);
  void enqueueAt(detail::Mailbox& box, const MessagePtr& msg, int64_t order, After& after);
  void unqueue(detail::Mailbox& box, const MessagePtr& msg);
  void takeInto(detail::Mailbox& box, const MessagePtr& msg, detail::Handle& h);
  // `from`: only messages sent by that process or its descendants (0: any).
  bool canTake(const detail::Mailbox& box, pid_t from = 0) const;
  void takeNext(detail::Mailbox& box, detail::Handle& h, pid_t reader, After& after);
  const MessagePtr& peekNext(const detail::Mailbox& box) const;
  MessagePtr popNext(detail::Mailbox& box, After& after, pid_t from = 0);
  MessagePtr takeFromSender(detail::Mailbox& box, std::list<detail::Waiter>::iterator sender, After& after);
  void finishTaken(detail::Mailbox& box, const MessagePtr& msg, detail::Handle& h, pid_t reader, After& after);
  void enterFromBatch(detail::Mailbox& box, detail::Waiter& w, After& after);
  // Batch nodes (engine_batch.cpp).
  Result<size_t> writeNow(detail::Handle& h, std::string_view data, off_t offset, bool nonblock, const Caller& who,
                          After& after);
  std::optional<WaiterId> writeBatch(detail::Handle& h, std::string_view data, bool nonblock, const Caller& who,
                                     WriteCompletion& done, After& after);
  Result<Bytes> takeBatch(detail::Mailbox& box, detail::Handle& h, size_t size, pid_t reader, After& after);
  // A batch sender's close/fsync; from release (no completion) it never waits.
  std::optional<WaiterId> flushBatch(detail::Handle& h, StatusCompletion done, After& after);
  void dispatch(detail::Mailbox& box, After& after);
  void admitSenders(detail::Mailbox& box, After& after);
  bool hasRoom(const detail::Mailbox& box) const;
  Bytes takeChunk(detail::Handle& h, size_t size, pid_t reader, After& after);
  void finishMessage(detail::Handle& h, pid_t reader, After& after);
  void settleReceipt(const detail::Message& msg, std::string line, After& after);
  void wakePollers(detail::Mailbox& box, After& after);
  MessagePtr draftMessage(detail::Handle& h);
  void assignSeqAndName(detail::Mailbox& box, detail::Message& msg);
  std::optional<WaiterId> send(detail::Handle& h, MessagePtr msg, StatusCompletion onStatus, ReadCompletion onRead,
                               size_t readSize, After& after);
  std::optional<WaiterId> sent(detail::Handle& h, const MessagePtr& msg, StatusCompletion& onStatus,
                               ReadCompletion& onRead, size_t readSize, After& after, WaiterId reuse = 0);
  std::optional<WaiterId> parkReceipt(detail::Handle& h, size_t size, ReadCompletion& done, After& after,
                                      WaiterId reuse = 0);
  Result<std::pair<struct stat, Opened>> createNow(detail::Mailbox& box, std::string_view name, int flags,
                                                   const Caller& who, bool takePlace);
  Status checkPolicy(detail::Mailbox& box, pid_t pid, bool receiving);
  void dropDeadPairMembers(detail::Mailbox& box) const;
  void abandonDropIn(detail::Handle& h, After& after);
  void forgetIfOrphan(detail::Mailbox& box, const MessagePtr& msg, const detail::Handle* releasing);
  Status setNodeXattr(uint64_t ino, std::string_view name);
  void destroyMailbox(const MailboxPtr& box, After& after);

  // procs/ (engine_procs.cpp). All REQUIRE: mutex_ held.
  MailboxPtr ensureInbox(pid_t pid, uint64_t instance, After& after);
  void retireInbox(const MailboxPtr& box, After& after);
  void reapExitedLocked(After& after);
  bool inboxOwnerAlive(const detail::Mailbox& box) const;
  bool mayBrowse(const detail::Mailbox& box, const Caller& who) const;
  bool maySend(const detail::Mailbox& box, const Caller& who) const;
  Status checkInboxAccess(const detail::Mailbox& box, const Caller& who, bool sending) const;
  Result<struct stat> lookupProcs(std::string_view name, const Caller& who, After& after);
  Result<struct stat> lookupFrom(uint64_t inboxId, std::string_view name, const Caller& who);
  bool hasMessagesFrom(const detail::Mailbox& box, pid_t from) const;
  void readdirProcs(uint64_t from, const std::function<bool(const DirEntry&)>& add) const;
  std::optional<Result<struct stat>> statProcs(uint64_t ino) const;
  void recordLineage(detail::Message& msg);
  WaiterId parkWaiter(detail::Mailbox& box, std::list<detail::Waiter>& list, detail::Waiter w);
  // A read waiting on a semaphore or a pipe end: queued on `list`, counted as a receiver.
  WaiterId parkRead(std::list<detail::Waiter>& list, uint64_t fh, size_t size, ReadCompletion& done);

  // shm/ and sem/ (engine_shm_sem.cpp). All REQUIRE: mutex_ held.
  std::optional<Result<struct stat>> statShmSem(uint64_t ino) const;
  Result<struct stat> lookupShmSem(uint64_t parent, std::string_view name) const;
  void readdirShmSem(uint64_t ino, uint64_t from, const std::function<bool(const DirEntry&)>& add) const;
  Result<std::pair<struct stat, Opened>> createShmSem(uint64_t parent, std::string_view name, mode_t mode, int flags,
                                                      const Caller& who);
  Result<Opened> openShmSem(uint64_t ino, int flags);
  std::optional<WaiterId> readShmSem(detail::Handle& h, size_t size, off_t offset, bool nonblock,
                                     ReadCompletion& done, After& after);
  Result<size_t> writeShmSem(detail::Handle& h, std::string_view data, off_t offset, After& after);
  Result<struct stat> setattrShmSem(uint64_t ino, const AttrChange& change);
  Status unlinkShmSem(uint64_t parent, std::string_view name);
  Status renameShmSem(uint64_t parent, std::string_view name, std::string_view newName);
  void releaseShmSem(detail::Handle& h);
  bool cancelSemWaiter(WaiterId id, After& after);
  void cancelMailboxWaiter(WaiterId id, After& after);
  void shutdownShmSem(After& after);

  // pipes/ (engine_pipes.cpp). All REQUIRE: mutex_ held.
  std::optional<Result<struct stat>> statPipe(uint64_t ino) const;
  bool isPipesDir(uint64_t ino) const;
  bool pipeNameTaken(uint64_t dir, std::string_view name) const;
  Result<struct stat> lookupPipe(uint64_t dir, std::string_view name) const;
  void readdirPipes(uint64_t dir, uint64_t from, const std::function<bool(const DirEntry&)>& add) const;
  Result<std::pair<struct stat, Opened>> createPipe(uint64_t dir, std::string_view name, mode_t mode, int flags,
                                                    const Caller& who);
  Result<struct stat> mkdirPipes(uint64_t dir, std::string_view name, mode_t mode, const Caller& who);
  Status rmdirPipes(uint64_t dir, std::string_view name);
  Result<Opened> openPipe(uint64_t ino, int flags);
  std::optional<WaiterId> readPipe(detail::Handle& h, size_t size, bool nonblock, ReadCompletion& done,
                                   After& after);
  std::optional<WaiterId> writePipe(detail::Handle& h, std::string_view data, bool nonblock, WriteCompletion& done,
                                    After& after);
  unsigned pollPipe(detail::Handle& h, PollNotify& notify);
  Result<struct stat> setattrPipe(uint64_t ino, const AttrChange& change);
  Status unlinkPipe(uint64_t dir, std::string_view name);
  Status renamePipe(uint64_t dir, std::string_view name, uint64_t newDir, std::string_view newName);
  void releasePipe(detail::Handle& h, After& after);
  void servePipeEnd(detail::Pipe& p, int end, After& after);
  bool cancelPipeWaiter(WaiterId id, After& after);
  void shutdownPipes(After& after);
  static void run(After& after);

  // --backend (engine_remote.cpp). Those taking `lock` hold mutex_ through it and release it
  // around every backend call; the others REQUIRE mutex_ not held unless noted.
  struct RemoteJob {
    enum class Kind { Wake, SemWake, Ack, Unhold, Settings, Namespace, Tick, Down } kind = Kind::Wake;
    uint64_t id = 0;
    uint64_t seq = 0;
    pid_t pid = 0;  // Ack: the reader; Unhold: the process that let go
  };
  using Lock = std::unique_lock<std::mutex>;
  void onBackendEvent(const BackendEvent& e);
  void queueRemote(RemoteJob job);                  // REQUIRES: mutex_ held
  void requestWake(detail::Mailbox& box);           // REQUIRES: mutex_ held
  void requestSemWake(detail::Semaphore& sem);      // REQUIRES: mutex_ held
  void remoteLoop();
  void runRemoteJob(const RemoteJob& job, Lock& lock, After& after);
  void serveRemote(const MailboxPtr& box, Lock& lock, After& after, bool tick);
  void serveRemoteHere(const MailboxPtr& box, After& after);  // REQUIRES: mutex_ held
  void pushSenders(const MailboxPtr& box, Lock& lock, After& after);
  void claimForReceivers(const MailboxPtr& box, Lock& lock, After& after, bool evenIfEmpty = false);
  void giveBackLeftovers(const MailboxPtr& box, Lock& lock);
  void registerWaiting(const MailboxPtr& box, Lock& lock, bool renew);
  void remoteTick(Lock& lock, After& after);
  void remoteSemWake(uint64_t id, Lock& lock, After& after);
  void failRemoteWaiters(int err, After& after);    // REQUIRES: mutex_ held
  bool acceptClaimed(const MailboxPtr& box, std::vector<RemoteMessage>&& claimed, Lock& lock, After& after);
  void injectClaimed(detail::Mailbox& box, RemoteMessage&& rm, After& after);  // REQUIRES: mutex_ held
  MailboxPtr mirrorMailbox(const RemoteMailbox& rm);  // REQUIRES: mutex_ held
  void applyRemoteSettings(detail::Mailbox& box, const RemoteMailbox& rm) const;  // REQUIRES: mutex_ held
  RemoteMailbox remoteRecord(const detail::Mailbox& box) const;  // REQUIRES: mutex_ held
  Status syncRemoteMailboxes();
  Status syncRemoteSemaphores();
  Status syncRemoteListing(uint64_t boxId);
  Status refreshIfMissing(uint64_t parent, std::string_view name);
  Result<struct stat> mkdirRemote(std::string_view name, mode_t mode, const Caller& who);
  Status rmdirRemote(std::string_view name);
  Status renameRemote(std::string_view name, std::string_view newName);
  // Before answering from a shared mailbox's or semaphore's mirror: the backend's current
  // values (EIO when it cannot be reached). No-op for anything else.
  Status refreshRemote(uint64_t ino);
  Status refreshRemoteSettings(uint64_t id);  // mode, owner, settings only
  // poll(2) of a shared mailbox's .receive or a shared semaphore with nothing here: asks
  // the backend whether a read would find something. nullopt: not such a file.
  std::optional<bool> remoteReadable(uint64_t fh);
  Result<unsigned> pollHere(uint64_t fh, PollNotify notify);  // poll() but for the backend's part
  // Opening a control node of a shared mailbox: its settings read afresh; .receive of an
  // exclusive one held across hosts first (EBUSY), any of a pair one bound (EPERM).
  Status holdRemote(uint64_t ino, pid_t pid);
  Result<std::pair<struct stat, Opened>> createRemoteSemaphore(std::string_view name, mode_t mode, int flags,
                                                               const Caller& who);
  Status unlinkRemoteSemaphore(std::string_view name);
  Status renameRemoteSemaphore(std::string_view name, std::string_view newName);
  Status shareSetattr(uint64_t ino, const struct stat& st, const AttrChange& change);
  std::optional<Result<size_t>> postRemoteSemaphore(uint64_t fh, std::string_view data);
  Status unlinkRemoteMessage(uint64_t parent, std::string_view name);
  // mv of a queued message from one shared mailbox to another (EXDEV: not that case).
  Status forwardRemote(uint64_t parent, std::string_view name, uint64_t newParent, std::string_view newName);

  // Completing a call (engine_durable.cpp). In memory they run `after` at once; in durable
  // mode only once the records this thread appended during the call are on disk, so nothing
  // is acknowledged before it would survive a crash. REQUIRE: mutex_ not held.
  void commit(After& after);      // completions: deferred to the journal's writer thread
  void commitSync(After& after);  // calls answered by their return value: waits here
  void commitAll(After& after);   // waits for every record appended so far, by anyone
  template <class T>
  void finishCall(std::function<void(T)>& done, T result, After& after) {
    if (done) {
      if (journal_) {
        after.insert(after.begin(), [d = std::move(done), r = std::move(result)]() mutable { d(std::move(r)); });
      } else {
        done(std::move(result));
      }
    }
    commit(after);
  }
  void snapshotIfDue();
  std::string snapshotRecords() const;  // REQUIRES: mutex_ held
  struct LoadContext;
  // Replaying the state directory. All REQUIRE: mutex_ held.
  std::expected<void, std::string> loadRecord(uint8_t type, std::string_view body, LoadContext& ctx);
  std::expected<void, std::string> finishLoad(LoadContext& ctx);
  // Journal records of changes. All REQUIRE: mutex_ held and journal_ set.
  void journalPut(const detail::Mailbox& box);
  void journalGone(const detail::Mailbox& box);
  // A message entering or moving in a mailbox (the whole message the first time, then its
  // place); in an inbox it is no longer kept.
  void journalMessage(const detail::Mailbox& box, detail::Message& msg);
  void journalTaken(const detail::Mailbox& box, detail::Message& msg);  // being read: comes back if cut short
  // Straight from a blocked sender's hands to a receiver, never queued.
  void journalHandedOver(detail::Mailbox& box, detail::Message& msg);
  void journalAttrs(const detail::Message& msg);  // mode, owner, times
  void journalGone(detail::Message& msg);
  // A message read to the end is removed from the record only once its reader confirms it
  // got it (its next read, or its close): if the daemon dies first, it comes back counted
  // as redelivered, never lost with a reply that did not arrive.
  void awaitConfirmation(const detail::Mailbox& box, const MessagePtr& msg, detail::Handle& h);
  void confirmTaken(detail::Handle& h);
  // --backend: the same for a claimed message: acknowledged to the backend once confirmed.
  void awaitRemoteConfirmation(const MessagePtr& msg, detail::Handle& h, pid_t reader);
  // A receiver's read confirms what it read before: acknowledged to the backend before the
  // read goes on, so a reader that saw a message's end never gets it again. Also called
  // once the reply that handed over a message's last byte is out (`early`, from
  // confirmAfterReply), so that the round trip overlaps the reader's next request; the next
  // read then waits for it, and an error is kept for that read. REQUIRES: mutex_ not held.
  // EIO: the backend could not be told (the message will come again).
  Status confirmRemoteNow(uint64_t fh, bool early = false);
  void journalPut(const detail::Segment& seg);
  void journalGone(const detail::Segment& seg);
  void journalPut(const detail::Semaphore& sem);
  void journalGone(const detail::Semaphore& sem);
  void journalPut(const detail::Pipe& pipe);
  void journalGone(const detail::Pipe& pipe);
  void journalPut(const detail::PipeDir& dir);
  void journalGone(const detail::PipeDir& dir);
  // shm/ contents to write on a flush, fsync or release (nullopt: nothing changed).
  struct SegmentSave {
    std::shared_ptr<detail::Segment> segment;
    uint64_t version = 0;
    std::shared_ptr<const std::string> data;
  };
  std::optional<SegmentSave> segmentToSave(const std::shared_ptr<detail::Segment>& seg);  // REQUIRES: mutex_ held
  Status saveSegment(const SegmentSave& save);  // REQUIRES: mutex_ not held

  const Limits limits_;
  const std::shared_ptr<ProcessTable> processes_;
  // Lock order: mutex_ is a leaf; callbacks collected in `After` run after unlocking.
  mutable std::mutex mutex_;
  std::map<uint64_t, MailboxPtr> mailboxesById_;                  // GUARDED_BY(mutex_)
  std::map<std::string, MailboxPtr, std::less<>> mailboxesByName_;  // GUARDED_BY(mutex_)
  // Inboxes (procs/PID) share mailbox ids but live apart from mailboxes/ and by-id/.
  std::map<uint64_t, MailboxPtr> inboxesById_;        // GUARDED_BY(mutex_)
  std::unordered_map<pid_t, MailboxPtr> inboxesByPid_;  // GUARDED_BY(mutex_)
  uint64_t inboxDiscarded_ = 0;  // messages discarded because their receiving process exited
  // The lineage recorded last: a batch into an inbox records one per message.
  pid_t lastLineagePid_ = 0;
  int64_t lastLineageAt_ = 0;
  std::shared_ptr<const std::vector<pid_t>> lastLineage_;
  // By uid: queued or being written (not owned: their mailbox's queue or their writer's
  // handle holds them). GUARDED_BY(mutex_)
  std::unique_ptr<detail::MessageTable> messages_;
  std::unordered_map<uint64_t, std::unique_ptr<detail::Handle>> handles_;  // GUARDED_BY(mutex_)
  std::unordered_map<WaiterId, detail::Mailbox*> waiterHomes_;    // GUARDED_BY(mutex_)
  std::map<std::string, std::shared_ptr<detail::Segment>, std::less<>> segments_;      // GUARDED_BY(mutex_)
  std::map<std::string, std::shared_ptr<detail::Semaphore>, std::less<>> semaphores_;  // GUARDED_BY(mutex_)
  // Every segment and semaphore that still has a name or an open file, by id.
  std::map<uint64_t, std::shared_ptr<detail::Segment>> segmentsById_;      // GUARDED_BY(mutex_)
  std::map<uint64_t, std::shared_ptr<detail::Semaphore>> semaphoresById_;  // GUARDED_BY(mutex_)
  std::unordered_map<WaiterId, detail::Semaphore*> semWaiterHomes_;        // GUARDED_BY(mutex_)
  std::unordered_map<uint64_t, uint32_t> shmSemOpens_;  // open files per segment/semaphore inode
  using PipeKey = std::pair<uint64_t, std::string>;  // (directory inode, name)
  std::map<PipeKey, std::shared_ptr<detail::Pipe>> pipes_;          // GUARDED_BY(mutex_)
  std::map<PipeKey, std::shared_ptr<detail::PipeDir>> pipeDirNames_;  // GUARDED_BY(mutex_)
  std::map<uint64_t, std::shared_ptr<detail::PipeDir>> pipeDirs_;     // by id; GUARDED_BY(mutex_)
  std::map<uint64_t, std::shared_ptr<detail::Pipe>> pipesById_;  // named, or open; GUARDED_BY(mutex_)
  std::unordered_map<WaiterId, detail::Pipe*> pipeWaiterHomes_;  // GUARDED_BY(mutex_)
  uint64_t pipeBytesMoved_ = 0;
  uint64_t nextMailboxId_ = 1;
  uint64_t nextShmSemId_ = 1;
  uint64_t nextMessageUid_ = 1;
  uint64_t nextHandle_ = 1;
  WaiterId nextWaiter_ = 1;
  uint64_t bytesUsed_ = 0;
  uint64_t snapshotHandles_ = 0;  // open .status files and message peeks: not in open_files
  uint64_t queuedMessages_ = 0;
  uint64_t queuedBytes_ = 0;
  uint64_t receiversWaiting_ = 0;
  uint64_t sendersWaiting_ = 0;
  uint64_t discarded_ = 0;
  uint64_t messagesSent_ = 0, messagesReceived_ = 0, messagesRedelivered_ = 0;
  std::array<std::atomic<uint64_t>, 134> errors_{};  // by errno (Linux errnos end at 133)
  bool shutDown_ = false;
  // Durable mode only (null: in memory, and no other journal code runs). Set once, before
  // any request; the journal serializes its own state (see journal.hpp).
  std::unique_ptr<durable::Journal> journal_;
  std::string record_;  // the record being encoded; GUARDED_BY(mutex_)

  // --backend only (null: everything is local, and no remote code runs). Set once, before
  // any request.
  std::shared_ptr<Backend> backend_;
  std::deque<RemoteJob> remoteJobs_;  // GUARDED_BY(mutex_)
  std::condition_variable remoteCv_;
  std::condition_variable remoteConfirmed_;  // a Handle's `confirming` became false
  // Held from fetching names from the backend to applying them (and around mkdir and
  // rename of a shared mailbox), so that an older fetch is never applied after a newer
  // change: it would remove or rename back what was just made. Taken before mutex_.
  std::mutex remoteSyncMutex_;
  std::thread remoteWorker_;
  bool remoteStopping_ = false;  // GUARDED_BY(mutex_)
  uint64_t remoteTickNo_ = 1;    // GUARDED_BY(mutex_): ticks of the remote worker so far, plus one
  uint64_t remoteAcksLost_ = 0;  // acks whose lease had run out: the message may come twice
  // Messages pushed from a .send opened O_RDWR, by (mailbox id, seq): their receipt comes
  // from the host whose reader acknowledges them.
  std::map<std::pair<uint64_t, uint64_t>, MessagePtr> remoteReceipts_;  // GUARDED_BY(mutex_)
};

}  // namespace ipcfs
