// The durable store behind --state-dir: an append-only journal of records with group commit,
// and snapshots. It knows nothing of what records mean (engine_durable.cpp does).
//
// Files in the state directory:
//   LOCK         flock()ed by the daemon using the directory: one daemon per directory
//   snapshot     the whole state as of generation G: header, records, CRC32C trailer
//   journal.G    what changed since that snapshot: a header, then frames, one per group commit
//   shm/ID       contents of shm/ segment ID (engine_durable.cpp)
// A frame is [u64 length][u32 CRC32C of the records][u32 CRC32C of the 12 bytes before] and
// the records; a record is [u8 type][u64 length][body]. Only the last frame can be torn (each
// frame is written and fdatasync()ed before the next one starts): a last frame cut short is
// a crash mid-append and is dropped; any other damage is reported and nothing is loaded.
//
// Thread safety: append() and snapshot() must be serialized by the caller (the engine calls
// them under its mutex; they take the journal's own mutex, a leaf after the engine's).
// Everything else may be called from any thread. Callbacks given to runWhenDurable() run on
// the writer thread (or the caller's, if already durable) with no lock held.
#pragma once

#include <time.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <expected>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace ipcfs::durable {

// Little-endian fields of a record body.
class Encoder {
 public:
  explicit Encoder(std::string& out) : out_(out) {}
  void u8(uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void u32(uint32_t v);
  void u64(uint64_t v);
  void i64(int64_t v) { u64(static_cast<uint64_t>(v)); }
  void time(const timespec& t) {
    i64(t.tv_sec);
    i64(t.tv_nsec);
  }
  void bytes(std::string_view s) {
    u64(s.size());
    out_.append(s);
  }

 private:
  std::string& out_;
};

// Reads what Encoder wrote; reading past the end yields zeros and clears ok().
class Decoder {
 public:
  explicit Decoder(std::string_view in) : in_(in) {}
  uint8_t u8();
  uint32_t u32();
  uint64_t u64();
  int64_t i64() { return static_cast<int64_t>(u64()); }
  timespec time();
  std::string_view bytes();
  bool ok() const { return ok_; }
  bool atEnd() const { return in_.empty(); }

 private:
  std::string_view take(size_t n);
  std::string_view in_;
  bool ok_ = true;
};

using Error = std::string;  // one line, for the daemon's error message
using Check = std::expected<void, Error>;

struct Record {
  uint8_t type = 0;
  std::string_view body;
};
using RecordFn = std::function<Check(const Record&)>;

inline constexpr size_t kRecordHeader = 9;
inline constexpr size_t kFrameHeader = 16;

// [u8 type][u64 length][body] appended to `out`.
void appendRecord(std::string& out, uint8_t type, std::string_view body);
// Calls fn for every record of `records` (the contents of frames or of a snapshot).
Check forEachRecord(std::string_view records, const RecordFn& fn);

// One frame holding `records`.
std::string encodeFrame(std::string_view records);
// A journal file's frames after its header: the records of every intact frame, where the
// intact part ends, and how many bytes after it are a torn last frame. Damage anywhere
// else is an error naming the byte offset.
struct Scan {
  std::string records;
  uint64_t validEnd = 0;   // offset (within `frames`) where the intact frames end
  uint64_t tornBytes = 0;  // bytes after validEnd: a last write cut short
};
std::expected<Scan, Error> scanFrames(std::string_view frames);

// A snapshot file: header (magic, version, generation), records, CRC32C of all before it.
std::string encodeSnapshot(uint64_t generation, std::string_view records);
struct SnapshotView {
  uint64_t generation = 0;
  std::string_view records;
};
std::expected<SnapshotView, Error> parseSnapshot(std::string_view file);

struct JournalOptions {
  uint64_t snapshotAfterBytes = uint64_t{64} << 20;  // journal size that asks for a snapshot
  // An I/O error on the journal: acknowledgements can no longer be given honestly. The
  // default prints the reason and aborts; the daemon logs it first.
  std::function<void(const std::string&)> onFatal;
};

class Journal {
 public:
  using Callbacks = std::vector<std::function<void()>>;

  // What open() read: the snapshot's records, then the journal's, to be replayed in order.
  struct Loaded {
    std::string snapshotFile;
    std::string_view snapshotRecords;
    std::string journalRecords;
    uint64_t generation = 0;
    std::string notes;  // what was repaired (a torn tail dropped), for the log; empty if nothing
  };

  // Opens the state directory (creating it and its files if missing), takes its lock, and
  // reads it. Errors: unusable directory, locked by another daemon, damaged files.
  static std::expected<std::unique_ptr<Journal>, Error> open(const std::string& dir, JournalOptions options,
                                                              Loaded& loaded);
  ~Journal();  // stops the writer thread after writing what is pending
  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;

  // Starts the writer thread (a daemon starts it after forking into the background). Until
  // then, waits write synchronously.
  void start();

  // REQUIRES: caller serialization (see the top). Appends one record; it becomes durable
  // with the next group commit.
  void append(uint8_t type, std::string_view body);
  // The number of the last record this thread appended since its previous call (0: none).
  static uint64_t takeThreadLsn();
  // The number of the last record appended by anyone.
  uint64_t appended() const {
    std::lock_guard lock(mutex_);
    return appended_;
  }
  // Blocks until record `lsn` is on disk.
  void waitDurable(uint64_t lsn);
  // Runs `callbacks` once record `lsn` is on disk (at once if it is already).
  void runWhenDurable(uint64_t lsn, Callbacks callbacks);

  // The journal has grown past JournalOptions::snapshotAfterBytes since the last snapshot.
  bool wantsSnapshot() const { return wantsSnapshot_.load(std::memory_order_relaxed); }
  // REQUIRES: caller serialization. `records` is the whole state after every record appended
  // so far; the writer makes it the new snapshot and starts a new journal after it.
  void snapshot(std::string records);
  // Writes everything pending (a snapshot() requested before included) and stops the writer.
  void stop();

  // shm/ segment contents, one file each (written and fdatasync()ed, outside any lock the
  // engine holds). `version` orders concurrent writes of one segment: an older one than
  // already written is skipped.
  Check writeSegment(uint64_t id, uint64_t version, std::string_view data);
  void removeSegment(uint64_t id);
  std::expected<std::string, Error> readSegment(uint64_t id) const;  // "" if it has no file
  // Deletes segment files whose id is not in `keep` (left by a crash between an unlink's
  // record and the removal of its file).
  void removeSegmentsExcept(const std::vector<uint64_t>& keep);

  const std::string& dir() const { return dir_; }

 private:
  Journal(std::string dir, JournalOptions options);
  Check openFiles(Loaded& loaded);
  void loop();
  // REQUIRES: lock held (released during I/O). Writes what is pending (and a requested
  // snapshot); returns the callbacks that became due.
  Callbacks writeOnce(std::unique_lock<std::mutex>& lock);
  void writeFrame(const std::string& records);
  void rotate(const std::string& records);
  static void run(Callbacks& callbacks);
  Callbacks dueLocked();
  [[noreturn]] void fatal(const std::string& what);
  std::string path(std::string_view name) const { return dir_ + "/" + std::string(name); }

  const std::string dir_;
  JournalOptions options_;
  int lockFd_ = -1;
  int dirFd_ = -1;
  int journalFd_ = -1;      // written only by whoever runs writeOnce (one at a time: writing_)
  uint64_t journalEnd_ = 0;  // bytes in the journal file
  uint64_t generation_ = 0;
  uint64_t lastSnapshotBytes_ = 0;

  mutable std::mutex mutex_;
  std::condition_variable wake_;     // the writer: something to write
  std::condition_variable durable_;  // waiters: the durable point moved
  std::string pending_;              // GUARDED_BY(mutex_): records not yet written
  uint64_t appended_ = 0;            // GUARDED_BY(mutex_): last record number appended
  uint64_t durableLsn_ = 0;          // GUARDED_BY(mutex_)
  std::optional<std::string> snapshotRecords_;  // GUARDED_BY(mutex_): a snapshot to write
  uint64_t snapshotLsn_ = 0;         // GUARDED_BY(mutex_)
  std::multimap<uint64_t, Callbacks> deferred_;  // GUARDED_BY(mutex_)
  bool writing_ = false;             // GUARDED_BY(mutex_): a writeOnce is doing I/O
  bool stopping_ = false;            // GUARDED_BY(mutex_)
  bool running_ = false;             // GUARDED_BY(mutex_)
  std::atomic<bool> wantsSnapshot_{false};
  std::thread writer_;
  std::mutex segmentMutex_;                      // leaf; serializes segment files
  std::map<uint64_t, uint64_t> segmentVersions_;  // GUARDED_BY(segmentMutex_): written last
};

}  // namespace ipcfs::durable
