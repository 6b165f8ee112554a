// The journal's file formats, its group commit and its snapshots (see journal.hpp).
#include "journal.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>

#include <fmt/format.h>

#include "crc32c.hpp"

namespace ipcfs::durable {

namespace {

constexpr std::string_view kJournalMagic = "IPCFSJNL";
constexpr std::string_view kSnapshotMagic = "IPCFSSNP";
constexpr uint32_t kFormatVersion = 1;
constexpr size_t kFileHeader = 8 + 4 + 8;  // magic, version, generation
constexpr std::string_view kSnapshotName = "snapshot";
constexpr std::string_view kSnapshotTemp = "snapshot.tmp";

thread_local uint64_t t_lastLsn = 0;

std::string errnoText(std::string_view what, const std::string& path) {
  return fmt::format("{} {}: {}", what, path, std::strerror(errno));
}

std::string fileHeader(std::string_view magic, uint64_t generation) {
  std::string out(magic);
  Encoder e(out);
  e.u32(kFormatVersion);
  e.u64(generation);
  return out;
}

// The generation a file header names, or an error saying what is wrong with it.
std::expected<uint64_t, Error> parseHeader(std::string_view file, std::string_view magic, std::string_view what) {
  if (file.size() < kFileHeader) return std::unexpected(fmt::format("{} is truncated ({} bytes)", what, file.size()));
  if (file.substr(0, 8) != magic) return std::unexpected(fmt::format("{} is not an ipcfs {} (bad magic)", what, what));
  Decoder d(file.substr(8, kFileHeader - 8));
  const uint32_t version = d.u32();
  if (version != kFormatVersion)
    return std::unexpected(fmt::format("{} has format version {}, this ipcfs reads {}", what, version, kFormatVersion));
  return d.u64();
}

std::string journalName(uint64_t generation) { return fmt::format("journal.{}", generation); }

std::optional<uint64_t> journalGeneration(std::string_view name) {
  if (!name.starts_with("journal.")) return std::nullopt;
  name.remove_prefix(8);
  uint64_t g = 0;
  auto [end, ec] = std::from_chars(name.data(), name.data() + name.size(), g);
  if (ec != std::errc{} || end != name.data() + name.size() || name.empty()) return std::nullopt;
  return g;
}

std::expected<std::string, Error> readWhole(int fd, const std::string& path) {
  struct stat st{};
  if (fstat(fd, &st) != 0) return std::unexpected(errnoText("cannot stat", path));
  std::string out(static_cast<size_t>(st.st_size), '\0');
  size_t got = 0;
  while (got < out.size()) {
    const ssize_t n = pread(fd, out.data() + got, out.size() - got, static_cast<off_t>(got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return std::unexpected(errnoText("cannot read", path));
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  out.resize(got);
  return out;
}

// Writes every byte of the iovecs at `offset`; false (errno set) on failure.
bool writeAllAt(int fd, std::vector<iovec> parts, uint64_t offset) {
  size_t i = 0;
  while (i < parts.size()) {
    const ssize_t n = pwritev(fd, parts.data() + i, static_cast<int>(std::min<size_t>(parts.size() - i, IOV_MAX)),
                              static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    offset += static_cast<uint64_t>(n);
    auto left = static_cast<size_t>(n);
    while (i < parts.size() && left >= parts[i].iov_len) left -= parts[i++].iov_len;
    if (i < parts.size()) {
      parts[i].iov_base = static_cast<char*>(parts[i].iov_base) + left;
      parts[i].iov_len -= left;
    }
  }
  return true;
}

iovec iov(std::string_view s) { return {const_cast<char*>(s.data()), s.size()}; }

bool allZero(std::string_view s) {
  for (char c : s)
    if (c != 0) return false;
  return true;
}

}  // namespace

// ------------------------------------------------------------------ encoding

void Encoder::u32(uint32_t v) {
  char b[4];
  for (int i = 0; i < 4; ++i) b[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  out_.append(b, 4);
}

void Encoder::u64(uint64_t v) {
  char b[8];
  for (int i = 0; i < 8; ++i) b[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  out_.append(b, 8);
}

std::string_view Decoder::take(size_t n) {
  if (!ok_ || in_.size() < n) {
    ok_ = false;
    in_ = {};
    return {};
  }
  std::string_view out = in_.substr(0, n);
  in_.remove_prefix(n);
  return out;
}

uint8_t Decoder::u8() {
  auto b = take(1);
  return b.empty() ? 0 : static_cast<uint8_t>(b[0]);
}

uint32_t Decoder::u32() {
  auto b = take(4);
  uint32_t v = 0;
  for (size_t i = 0; i < b.size(); ++i) v |= uint32_t{static_cast<unsigned char>(b[i])} << (8 * i);
  return v;
}

uint64_t Decoder::u64() {
  auto b = take(8);
  uint64_t v = 0;
  for (size_t i = 0; i < b.size(); ++i) v |= uint64_t{static_cast<unsigned char>(b[i])} << (8 * i);
  return v;
}

timespec Decoder::time() {
  timespec t{};
  t.tv_sec = static_cast<time_t>(i64());
  t.tv_nsec = static_cast<long>(i64());
  return t;
}

std::string_view Decoder::bytes() {
  const uint64_t n = u64();
  if (n > in_.size()) {
    ok_ = false;
    in_ = {};
    return {};
  }
  return take(static_cast<size_t>(n));
}

void appendRecord(std::string& out, uint8_t type, std::string_view body) {
  Encoder e(out);
  e.u8(type);
  e.u64(body.size());
  out.append(body);
}

Check forEachRecord(std::string_view records, const RecordFn& fn) {
  size_t pos = 0;
  while (pos < records.size()) {
    Decoder d(records.substr(pos, kRecordHeader));
    const uint8_t type = d.u8();
    const uint64_t len = d.u64();
    if (!d.ok() || len > records.size() - pos - kRecordHeader)
      return std::unexpected(fmt::format("a record at byte {} runs past its frame", pos));
    if (auto r = fn({type, records.substr(pos + kRecordHeader, static_cast<size_t>(len))}); !r) return r;
    pos += kRecordHeader + static_cast<size_t>(len);
  }
  return {};
}

std::string encodeFrame(std::string_view records) {
  std::string out;
  out.reserve(kFrameHeader + records.size());
  Encoder e(out);
  e.u64(records.size());
  e.u32(crc32c(records));
  e.u32(crc32c(out));
  out.append(records);
  return out;
}

std::expected<Scan, Error> scanFrames(std::string_view frames) {
  Scan scan;
  size_t pos = 0;
  while (pos < frames.size()) {
    const std::string_view rest = frames.substr(pos);
    // A header cut short, or never written (zeros), can only be the end of a crashed append.
    if (rest.size() < kFrameHeader || allZero(rest)) break;
    Decoder d(rest.substr(0, kFrameHeader));
    const uint64_t len = d.u64();
    const uint32_t recordsCrc = d.u32();
    const uint32_t headerCrc = d.u32();
    if (crc32c(rest.substr(0, 12)) != headerCrc)
      return std::unexpected(fmt::format("frame header at byte {} fails its checksum", pos));
    if (len > rest.size() - kFrameHeader) break;  // the last frame, cut short
    const std::string_view records = rest.substr(kFrameHeader, static_cast<size_t>(len));
    if (crc32c(records) != recordsCrc) {
      if (kFrameHeader + len == rest.size()) break;  // the last frame, partly written
      return std::unexpected(fmt::format("frame at byte {} fails its checksum ({} bytes follow it)", pos,
                                         rest.size() - kFrameHeader - len));
    }
    if (auto r = forEachRecord(records, [](const Record&) { return Check{}; }); !r)
      return std::unexpected(fmt::format("frame at byte {}: {}", pos, r.error()));
    scan.records.append(records);
    pos += kFrameHeader + static_cast<size_t>(len);
  }
  scan.validEnd = pos;
  scan.tornBytes = frames.size() - pos;
  return scan;
}

std::string encodeSnapshot(uint64_t generation, std::string_view records) {
  std::string out = fileHeader(kSnapshotMagic, generation);
  out.append(records);
  Encoder(out).u32(crc32c(out));
  return out;
}

std::expected<SnapshotView, Error> parseSnapshot(std::string_view file) {
  auto generation = parseHeader(file, kSnapshotMagic, "snapshot");
  if (!generation) return std::unexpected(generation.error());
  if (file.size() < kFileHeader + 4) return std::unexpected("snapshot is truncated (no checksum)");
  const std::string_view body = file.substr(0, file.size() - 4);
  Decoder d(file.substr(file.size() - 4));
  if (crc32c(body) != d.u32())
    return std::unexpected(fmt::format("snapshot ({} bytes) fails its checksum: truncated or damaged", file.size()));
  SnapshotView view{*generation, body.substr(kFileHeader)};
  if (auto r = forEachRecord(view.records, [](const Record&) { return Check{}; }); !r)
    return std::unexpected("snapshot: " + r.error());
  return view;
}

// ------------------------------------------------------------------ the journal

Journal::Journal(std::string dir, JournalOptions options) : dir_(std::move(dir)), options_(std::move(options)) {}

std::expected<std::unique_ptr<Journal>, Error> Journal::open(const std::string& dir, JournalOptions options,
                                                             Loaded& loaded) {
  std::unique_ptr<Journal> j(new Journal(dir, std::move(options)));
  if (auto r = j->openFiles(loaded); !r) return std::unexpected(r.error());
  return j;
}

Check Journal::openFiles(Loaded& loaded) {
  if (::mkdir(dir_.c_str(), 0700) != 0 && errno != EEXIST) return std::unexpected(errnoText("cannot create", dir_));
  dirFd_ = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dirFd_ < 0) return std::unexpected(errnoText("cannot open", dir_));
  if (::mkdirat(dirFd_, "shm", 0700) != 0 && errno != EEXIST) return std::unexpected(errnoText("cannot create", path("shm")));
  lockFd_ = ::open(path("LOCK").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lockFd_ < 0) return std::unexpected(errnoText("cannot open", path("LOCK")));
  if (flock(lockFd_, LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) return std::unexpected(fmt::format("{} is in use by another ipcfs daemon", dir_));
    return std::unexpected(errnoText("cannot lock", path("LOCK")));
  }

  // The snapshot names the generation whose journal follows it.
  bool haveSnapshot = false;
  if (int fd = ::open(path(kSnapshotName).c_str(), O_RDONLY | O_CLOEXEC); fd >= 0) {
    auto file = readWhole(fd, path(kSnapshotName));
    ::close(fd);
    if (!file) return std::unexpected(file.error());
    loaded.snapshotFile = std::move(*file);
    auto view = parseSnapshot(loaded.snapshotFile);
    if (!view) return std::unexpected(fmt::format("{}/{}", dir_, view.error()));
    loaded.snapshotRecords = view->records;
    generation_ = view->generation;
    lastSnapshotBytes_ = loaded.snapshotFile.size();
    haveSnapshot = true;
  } else if (errno != ENOENT) {
    return std::unexpected(errnoText("cannot open", path(kSnapshotName)));
  }

  // Other journals are leftovers of a snapshot switch: older ones were replaced by the
  // snapshot, a newer one belongs to a switch that did not complete (it holds nothing).
  std::vector<std::string> stale;
  std::string newer;  // a journal after the current one: from a switch that did not complete
  bool haveJournal = false;
  if (DIR* d = fdopendir(::dup(dirFd_))) {
    while (dirent* e = readdir(d)) {
      const std::string_view name = e->d_name;
      if (name == kSnapshotTemp) stale.emplace_back(name);
      auto g = journalGeneration(name);
      if (!g) continue;
      if (*g == generation_) haveJournal = true;
      else stale.emplace_back(name);
      if (*g > generation_) newer = name;
    }
    closedir(d);
  } else {
    return std::unexpected(errnoText("cannot list", dir_));
  }
  if (!haveJournal && (haveSnapshot || !newer.empty()))
    return std::unexpected(fmt::format("{}/{} is missing ({})", dir_, journalName(generation_),
                                       haveSnapshot ? "the snapshot names it" : newer + " exists but no snapshot"));

  const std::string jpath = path(journalName(generation_));
  journalFd_ = ::open(jpath.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (journalFd_ < 0) return std::unexpected(errnoText("cannot open", jpath));
  auto file = readWhole(journalFd_, jpath);
  if (!file) return std::unexpected(file.error());
  if (file->size() < kFileHeader && !haveSnapshot) {
    // A first start that did not get as far as writing the header: nothing is lost.
    const std::string header = fileHeader(kJournalMagic, generation_);
    if (!writeAllAt(journalFd_, {iov(header)}, 0) || ftruncate(journalFd_, kFileHeader) != 0 ||
        fdatasync(journalFd_) != 0 || fsync(dirFd_) != 0)
      return std::unexpected(errnoText("cannot write", jpath));
    journalEnd_ = kFileHeader;
  } else {
    auto g = parseHeader(*file, kJournalMagic, journalName(generation_));
    if (!g) return std::unexpected(fmt::format("{}/{}", dir_, g.error()));
    if (*g != generation_)
      return std::unexpected(fmt::format("{} names generation {}, expected {}", jpath, *g, generation_));
    auto scan = scanFrames(std::string_view(*file).substr(kFileHeader));
    if (!scan) return std::unexpected(fmt::format("{}: {}: the state directory is damaged", jpath, scan.error()));
    loaded.journalRecords = std::move(scan->records);
    journalEnd_ = kFileHeader + scan->validEnd;
    if (scan->tornBytes > 0) {
      if (ftruncate(journalFd_, static_cast<off_t>(journalEnd_)) != 0 || fdatasync(journalFd_) != 0)
        return std::unexpected(errnoText("cannot truncate", jpath));
      loaded.notes = fmt::format("{}: dropped {} bytes of a last write cut short by a crash", jpath, scan->tornBytes);
    }
  }
  for (const auto& name : stale) ::unlinkat(dirFd_, name.c_str(), 0);
  loaded.generation = generation_;
  return {};
}

Journal::~Journal() {
  stop();
  for (int fd : {journalFd_, dirFd_, lockFd_})
    if (fd >= 0) ::close(fd);
}

void Journal::start() {
  std::lock_guard lock(mutex_);
  if (running_ || stopping_) return;
  running_ = true;
  writer_ = std::thread([this] { loop(); });
}

void Journal::stop() {
  {
    std::unique_lock lock(mutex_);
    stopping_ = true;
    if (!running_) {
      while (!pending_.empty() || snapshotRecords_) {
        Callbacks due = writeOnce(lock);
        lock.unlock();
        run(due);
        lock.lock();
      }
      return;
    }
  }
  wake_.notify_all();
  if (writer_.joinable()) writer_.join();
}

void Journal::run(Callbacks& callbacks) {
  for (auto& f : callbacks) f();
  callbacks.clear();
}

void Journal::loop() {
  std::unique_lock lock(mutex_);
  for (;;) {
    wake_.wait(lock, [&] { return !pending_.empty() || snapshotRecords_ || stopping_; });
    if (pending_.empty() && !snapshotRecords_ && stopping_) break;
    Callbacks due = writeOnce(lock);
    lock.unlock();
    run(due);
    lock.lock();
  }
  running_ = false;
}

void Journal::append(uint8_t type, std::string_view body) {
  {
    std::lock_guard lock(mutex_);
    appendRecord(pending_, type, body);
    t_lastLsn = ++appended_;
  }
  wake_.notify_one();
}

uint64_t Journal::takeThreadLsn() { return std::exchange(t_lastLsn, 0); }

void Journal::waitDurable(uint64_t lsn) {
  std::unique_lock lock(mutex_);
  if (running_ && std::this_thread::get_id() != writer_.get_id()) {
    durable_.wait(lock, [&] { return durableLsn_ >= lsn; });
    return;
  }
  // No writer thread yet, or this is it (a callback calling back): write here.
  while (durableLsn_ < lsn) {
    Callbacks due = writeOnce(lock);
    lock.unlock();
    run(due);
    lock.lock();
  }
}

void Journal::runWhenDurable(uint64_t lsn, Callbacks callbacks) {
  {
    std::lock_guard lock(mutex_);
    if (durableLsn_ < lsn && running_) {
      deferred_.emplace(lsn, std::move(callbacks));
      return;
    }
  }
  waitDurable(lsn);
  run(callbacks);
}

void Journal::snapshot(std::string records) {
  {
    std::lock_guard lock(mutex_);
    // Everything appended so far is in `records`: what is not written yet need not be.
    pending_.clear();
    snapshotRecords_ = std::move(records);
    snapshotLsn_ = appended_;
    wantsSnapshot_ = false;
  }
  wake_.notify_one();
}

Journal::Callbacks Journal::dueLocked() {
  Callbacks due;
  auto end = deferred_.upper_bound(durableLsn_);
  for (auto it = deferred_.begin(); it != end; ++it)
    for (auto& f : it->second) due.push_back(std::move(f));
  deferred_.erase(deferred_.begin(), end);
  return due;
}

Journal::Callbacks Journal::writeOnce(std::unique_lock<std::mutex>& lock) {
  durable_.wait(lock, [&] { return !writing_; });
  if (pending_.empty() && !snapshotRecords_) return dueLocked();
  writing_ = true;
  std::optional<std::string> snap = std::move(snapshotRecords_);
  snapshotRecords_.reset();
  std::string records = std::move(pending_);
  pending_.clear();
  const uint64_t upto = appended_;
  lock.unlock();
  if (snap) rotate(*snap);
  if (!records.empty()) writeFrame(records);
  lock.lock();
  writing_ = false;
  durableLsn_ = upto;
  const uint64_t limit = std::max(options_.snapshotAfterBytes, 2 * lastSnapshotBytes_);
  if (journalEnd_ > limit && !snapshotRecords_) wantsSnapshot_ = true;
  durable_.notify_all();
  return dueLocked();
}

void Journal::writeFrame(const std::string& records) {
  std::string header;
  Encoder e(header);
  e.u64(records.size());
  e.u32(crc32c(records));
  e.u32(crc32c(header));
  if (!writeAllAt(journalFd_, {iov(header), iov(records)}, journalEnd_))
    fatal(errnoText("cannot write", path(journalName(generation_))));
  if (fdatasync(journalFd_) != 0) fatal(errnoText("cannot sync", path(journalName(generation_))));
  journalEnd_ += header.size() + records.size();
}

// The new journal first (empty), then the snapshot naming it, made current by a rename;
// only then is the old journal dropped. A crash anywhere leaves a consistent pair.
void Journal::rotate(const std::string& records) {
  const uint64_t next = generation_ + 1;
  const std::string jpath = path(journalName(next));
  const int fd = ::open(jpath.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  const std::string jheader = fileHeader(kJournalMagic, next);
  if (fd < 0 || !writeAllAt(fd, {iov(jheader)}, 0) || fdatasync(fd) != 0) fatal(errnoText("cannot write", jpath));

  const std::string tpath = path(kSnapshotTemp);
  const int sfd = ::open(tpath.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  const std::string sheader = fileHeader(kSnapshotMagic, next);
  std::string trailer;
  Encoder(trailer).u32(crc32c(records, crc32c(sheader)));
  if (sfd < 0 || !writeAllAt(sfd, {iov(sheader), iov(records), iov(trailer)}, 0) || fdatasync(sfd) != 0)
    fatal(errnoText("cannot write", tpath));
  ::close(sfd);
  if (fsync(dirFd_) != 0) fatal(errnoText("cannot sync", dir_));
  if (::renameat(dirFd_, std::string(kSnapshotTemp).c_str(), dirFd_, std::string(kSnapshotName).c_str()) != 0)
    fatal(errnoText("cannot rename", tpath));
  if (fsync(dirFd_) != 0) fatal(errnoText("cannot sync", dir_));
  ::close(journalFd_);
  ::unlinkat(dirFd_, journalName(generation_).c_str(), 0);
  journalFd_ = fd;
  journalEnd_ = jheader.size();
  generation_ = next;
  lastSnapshotBytes_ = sheader.size() + records.size() + trailer.size();
}

void Journal::fatal(const std::string& what) {
  const std::string text = "durable state: " + what + " (stopping: acknowledgements could not be kept)";
  if (options_.onFatal) options_.onFatal(text);
  std::fprintf(stderr, "ipcfs: %s\n", text.c_str());
  std::abort();
}

// ------------------------------------------------------------------ shm/ files

Check Journal::writeSegment(uint64_t id, uint64_t version, std::string_view data) {
  std::lock_guard lock(segmentMutex_);
  auto& written = segmentVersions_[id];
  if (written > version) return {};  // a newer version is on disk already
  const std::string p = path(fmt::format("shm/{}", id));
  int fd = ::open(p.c_str(), O_WRONLY | O_CLOEXEC);
  bool created = false;
  if (fd < 0 && errno == ENOENT) {
    fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    created = true;
  }
  if (fd < 0) return std::unexpected(errnoText("cannot open", p));
  const bool ok = writeAllAt(fd, {iov(data)}, 0) && ftruncate(fd, static_cast<off_t>(data.size())) == 0 &&
                  fdatasync(fd) == 0;
  const int err = errno;
  ::close(fd);
  if (!ok) {
    errno = err;
    return std::unexpected(errnoText("cannot write", p));
  }
  if (created) {
    const int shmFd = ::openat(dirFd_, "shm", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (shmFd >= 0) {
      fsync(shmFd);
      ::close(shmFd);
    }
  }
  written = version;
  return {};
}

void Journal::removeSegment(uint64_t id) {
  std::lock_guard lock(segmentMutex_);
  segmentVersions_.erase(id);
  ::unlinkat(dirFd_, fmt::format("shm/{}", id).c_str(), 0);
}

std::expected<std::string, Error> Journal::readSegment(uint64_t id) const {
  const std::string p = path(fmt::format("shm/{}", id));
  const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) return std::string{};
  if (fd < 0) return std::unexpected(errnoText("cannot open", p));
  auto data = readWhole(fd, p);
  ::close(fd);
  return data;
}

void Journal::removeSegmentsExcept(const std::vector<uint64_t>& keep) {
  const int shmFd = ::openat(dirFd_, "shm", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (shmFd < 0) return;
  std::vector<std::string> orphans;
  if (DIR* d = fdopendir(::dup(shmFd))) {
    while (dirent* e = readdir(d)) {
      uint64_t id = 0;
      const std::string_view name = e->d_name;
      auto [end, ec] = std::from_chars(name.data(), name.data() + name.size(), id);
      if (ec != std::errc{} || end != name.data() + name.size()) continue;
      if (std::find(keep.begin(), keep.end(), id) == keep.end()) orphans.emplace_back(name);
    }
    closedir(d);
  }
  for (const auto& name : orphans) ::unlinkat(shmFd, name.c_str(), 0);
  ::close(shmFd);
}

}  // namespace ipcfs::durable
