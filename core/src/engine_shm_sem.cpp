// shm/ segments and sem/ semaphores: the namespace entries, their files and the waits.
//
// A segment's bytes live in the kernel's page cache of its inode, which is the shared
// memory every mapper sees; the daemon keeps what the kernel writes back (write(2),
// msync, munmap, close) so new openers and mappers see it. A semaphore read at offset 0
// is one wait (P), parked like a receive; a write posts (V).
#include <fcntl.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>

#include "clock.hpp"
#include "decimal.hpp"
#include "ipcfs/engine.hpp"
#include "ipcfs/inode.hpp"
#include "names.hpp"
#include "objects.hpp"

namespace ipcfs {

using detail::Handle;
using detail::HandleKind;
using detail::Segment;
using detail::Semaphore;
using detail::WaitKind;
using detail::Waiter;

namespace {

template <class Object>
struct stat objectStat(uint64_t ino, mode_t type, const Object& o, off_t size) {
  struct stat st{};
  st.st_ino = ino;
  st.st_mode = type | o.mode;
  st.st_nlink = 1;
  st.st_uid = o.uid;
  st.st_gid = o.gid;
  st.st_size = size;
  st.st_blocks = (size + 511) / 512;
  st.st_blksize = 4096;
  st.st_atim = o.atime;
  st.st_mtim = o.mtime;
  st.st_ctim = o.ctime;
  return st;
}

struct stat segmentStat(const Segment& s) {
  return objectStat(ino::make(ino::Kind::Segment, s.id), S_IFREG, s, static_cast<off_t>(s.data.size()));
}

// Size 0: a read waits and takes, so content sniffers must not read.
struct stat semaphoreStat(const Semaphore& s) {
  return objectStat(ino::make(ino::Kind::Semaphore, s.id), S_IFREG, s, 0);
}


}  // namespace

std::optional<Result<struct stat>> Engine::statShmSem(uint64_t ino) const {
  if (ino::kindOf(ino) == ino::Kind::Segment) {
    auto it = segmentsById_.find(ino::idOf(ino));
    if (it == segmentsById_.end()) return Result<struct stat>(fail(ENOENT));
    return Result<struct stat>(segmentStat(*it->second));
  }
  if (ino::kindOf(ino) == ino::Kind::Semaphore) {
    auto it = semaphoresById_.find(ino::idOf(ino));
    if (it == semaphoresById_.end()) return Result<struct stat>(fail(ENOENT));
    return Result<struct stat>(semaphoreStat(*it->second));
  }
  return std::nullopt;
}

Result<struct stat> Engine::lookupShmSem(uint64_t parent, std::string_view name) const {
  if (parent == ino::kShm) {
    auto it = segments_.find(name);
    if (it == segments_.end()) return fail(ENOENT);
    return segmentStat(*it->second);
  }
  auto it = semaphores_.find(name);
  if (it == semaphores_.end()) return fail(ENOENT);
  return semaphoreStat(*it->second);
}

void Engine::readdirShmSem(uint64_t ino, uint64_t from, const std::function<bool(const DirEntry&)>& add) const {
  constexpr uint64_t kFirstEntry = 3;  // as in engine_namespace.cpp: after "." and ".."
  // Listed by id so that paging resumes where it stopped.
  if (ino == ino::kShm) {
    for (auto it = segmentsById_.lower_bound(from); it != segmentsById_.end(); ++it)
      if (!it->second->unlinked && !add({it->second->name, segmentStat(*it->second), kFirstEntry + it->first})) return;
  } else {
    for (auto it = semaphoresById_.lower_bound(from); it != semaphoresById_.end(); ++it)
      if (!it->second->unlinked && !add({it->second->name, semaphoreStat(*it->second), kFirstEntry + it->first}))
        return;
  }
}

Result<std::pair<struct stat, Opened>> Engine::createShmSem(uint64_t parent, std::string_view name, mode_t mode,
                                                            int flags, const Caller& who) {
  if (auto ok = validateName(name); !ok) return fail(ok.error());
  const timespec t = now();
  auto fill = [&](auto& o) {
    o.id = nextShmSemId_++;
    o.name = std::string(name);
    o.mode = mode & 07777;
    o.uid = who.uid;
    o.gid = who.gid;
    o.atime = o.mtime = o.ctime = t;
  };
  auto h = std::make_unique<Handle>();
  Opened opened;
  struct stat st{};
  if (parent == ino::kShm) {
    if (segments_.contains(name)) {
      if (flags & O_EXCL) return fail(EEXIST);
      // The kernel looked it up first; only a race lands here: open the existing one.
    }
    auto seg = std::make_shared<Segment>();
    fill(*seg);
    const bool named = segments_.emplace(seg->name, seg).second;
    segmentsById_.emplace(seg->id, seg);
    if (journal_ && named) journalPut(*seg);
    h->kind = HandleKind::Segment;
    h->segment = seg;
    opened.directIo = false;  // the page cache is the shared memory
    opened.keepCache = true;
    st = segmentStat(*seg);
  } else {
    if (semaphores_.contains(name) && (flags & O_EXCL)) return fail(EEXIST);
    auto sem = std::make_shared<Semaphore>();
    fill(*sem);
    const bool named = semaphores_.emplace(sem->name, sem).second;
    semaphoresById_.emplace(sem->id, sem);
    if (journal_ && named) journalPut(*sem);
    h->kind = HandleKind::Semaphore;
    h->semaphore = sem;
    st = semaphoreStat(*sem);
  }
  h->nonblock = (flags & O_NONBLOCK) != 0;
  ++shmSemOpens_[st.st_ino];
  opened.fh = addHandle(std::move(h));
  return std::pair{st, opened};
}

Result<Opened> Engine::openShmSem(uint64_t ino, int flags) {
  auto h = std::make_unique<Handle>();
  Opened opened;
  if (ino::kindOf(ino) == ino::Kind::Segment) {
    auto it = segmentsById_.find(ino::idOf(ino));
    if (it == segmentsById_.end()) return fail(ENOENT);
    Segment& seg = *it->second;
    if ((flags & O_TRUNC) && (flags & O_ACCMODE) != O_RDONLY && !seg.data.empty()) {
      releaseBytes(seg.data.size());
      seg.data.clear();
      ++seg.version;
      seg.mtime = seg.ctime = now();
    }
    h->kind = HandleKind::Segment;
    h->segment = it->second;
    opened.directIo = false;
    // Keep the mappers' pages: every open comes through this same page cache.
    opened.keepCache = true;
  } else {
    auto it = semaphoresById_.find(ino::idOf(ino));
    if (it == semaphoresById_.end()) return fail(ENOENT);
    h->kind = HandleKind::Semaphore;
    h->semaphore = it->second;
  }
  h->nonblock = (flags & O_NONBLOCK) != 0;
  ++shmSemOpens_[ino];
  opened.fh = addHandle(std::move(h));
  return opened;
}

std::optional<WaiterId> Engine::readShmSem(Handle& h, size_t size, off_t offset, bool nonblock, ReadCompletion& done,
                                           After& after) {
  auto reply = [&](Result<Bytes> r) { after.push_back([d = std::move(done), r = std::move(r)] { d(r); }); };
  if (h.kind == HandleKind::Segment) {
    const std::string& data = h.segment->data;
    const auto off = static_cast<size_t>(offset);
    auto chunk = std::make_shared<const std::string>(off < data.size() ? data.substr(off, size) : std::string{});
    reply(Bytes::slice(chunk, 0, chunk->size()));
    return std::nullopt;
  }
  Semaphore& sem = *h.semaphore;
  if (offset > 0) {  // `cat` is exactly one wait: its second read ends the file
    reply(Bytes::empty());
    return std::nullopt;
  }
  if (sem.remote) {  // the remote worker waits in the backend; O_NONBLOCK only for its answer
    if (shutDown_) {
      reply(fail(ESHUTDOWN));
      return std::nullopt;
    }
    const WaiterId id = parkRead(sem.waiters, h.fh, size, done);
    sem.waiters.back().nonblock = nonblock;
    semWaiterHomes_.emplace(id, &sem);
    requestSemWake(sem);
    return id;
  }
  if (sem.value > 0) {
    --sem.value;
    if (journal_ && !sem.unlinked) journalPut(sem);
    auto text = std::make_shared<const std::string>(std::to_string(sem.value) + "\n");
    reply(Bytes::slice(text, 0, size));
    return std::nullopt;
  }
  if (shutDown_) {
    reply(fail(ESHUTDOWN));
    return std::nullopt;
  }
  if (nonblock) {
    reply(fail(EAGAIN));
    return std::nullopt;
  }
  const WaiterId id = parkRead(sem.waiters, h.fh, size, done);
  semWaiterHomes_.emplace(id, &sem);
  return id;
}

Result<size_t> Engine::writeShmSem(Handle& h, std::string_view data, off_t offset, After& after) {
  if (h.kind == HandleKind::Segment) {
    Segment& seg = *h.segment;
    const uint64_t end = static_cast<uint64_t>(offset) + data.size();
    if (end > limits_.maxSegmentSize) return fail(EFBIG);
    if (end > seg.data.size()) {
      if (auto r = reserveBytes(end - seg.data.size()); !r) return fail(r.error());
      seg.data.resize(end);
    }
    seg.data.replace(static_cast<size_t>(offset), data.size(), data);
    ++seg.version;
    // mtime stays: a changed mtime would make the kernel drop every mapper's pages.
    return data.size();
  }
  Semaphore& sem = *h.semaphore;
  auto n = parsePost(data);
  if (!n) return fail(n.error());
  if (*n > kSemValueMax || sem.value > kSemValueMax - *n) return fail(EOVERFLOW);
  sem.value += *n;
  sem.mtime = sem.ctime = now();
  while (sem.value > 0 && !sem.waiters.empty()) {
    Waiter w = std::move(sem.waiters.front());
    sem.waiters.pop_front();
    semWaiterHomes_.erase(w.id);
    --receiversWaiting_;
    --sem.value;
    auto text = std::make_shared<const std::string>(std::to_string(sem.value) + "\n");
    after.push_back([d = std::move(w.onRead), chunk = Bytes::slice(text, 0, w.size)] { d(chunk); });
  }
  if (journal_ && !sem.unlinked) journalPut(sem);
  for (auto& [fh, notify] : sem.pollers) after.push_back(std::move(notify));
  sem.pollers.clear();
  return data.size();
}

Result<struct stat> Engine::setattrShmSem(uint64_t ino, const AttrChange& change) {
  const timespec t = now();
  auto apply = [&](auto& o) { detail::applyChange(o, change, t); };
  if (ino::kindOf(ino) == ino::Kind::Segment) {
    auto it = segmentsById_.find(ino::idOf(ino));
    if (it == segmentsById_.end()) return fail(ENOENT);
    Segment& seg = *it->second;
    if (change.size) {
      const auto size = static_cast<uint64_t>(*change.size);
      if (size > limits_.maxSegmentSize) return fail(EFBIG);
      if (size > seg.data.size()) {
        if (auto r = reserveBytes(size - seg.data.size()); !r) return fail(r.error());
      } else {
        releaseBytes(seg.data.size() - size);
      }
      seg.data.resize(size);
      seg.mtime = t;
      ++seg.version;
    }
    apply(seg);
    if (journal_ && !seg.unlinked) journalPut(seg);
    return segmentStat(seg);
  }
  auto it = semaphoresById_.find(ino::idOf(ino));
  if (it == semaphoresById_.end()) return fail(ENOENT);
  // `echo 3 > sem/x` truncates first: accepted, the value is not a size.
  apply(*it->second);
  if (journal_ && !it->second->unlinked) journalPut(*it->second);
  return semaphoreStat(*it->second);
}

Status Engine::unlinkShmSem(uint64_t parent, std::string_view name) {
  // Unlinked objects stay alive for their open files and mappings.
  auto forget = [&](auto& byName, auto& byId, uint64_t ino, auto it) {
    if (journal_) journalGone(*it->second);
    it->second->unlinked = true;
    if (!shmSemOpens_.contains(ino)) {
      if constexpr (std::is_same_v<std::decay_t<decltype(*it->second)>, Segment>) releaseBytes(it->second->data.size());
      byId.erase(it->second->id);
    }
    byName.erase(it);
  };
  if (parent == ino::kShm) {
    auto it = segments_.find(name);
    if (it == segments_.end()) return fail(ENOENT);
    forget(segments_, segmentsById_, ino::make(ino::Kind::Segment, it->second->id), it);
    return {};
  }
  auto it = semaphores_.find(name);
  if (it == semaphores_.end()) return fail(ENOENT);
  forget(semaphores_, semaphoresById_, ino::make(ino::Kind::Semaphore, it->second->id), it);
  return {};
}

Status Engine::renameShmSem(uint64_t parent, std::string_view name, std::string_view newName) {
  auto move = [&](auto& byName) -> Status {
    auto it = byName.find(name);
    if (it == byName.end()) return fail(ENOENT);
    if (name == newName) return {};
    if (byName.contains(newName)) return fail(EEXIST);  // never replaced silently, like mailboxes
    auto obj = it->second;
    byName.erase(it);
    obj->name = std::string(newName);
    obj->ctime = now();
    byName.emplace(obj->name, obj);
    if (journal_) journalPut(*obj);
    return {};
  };
  return parent == ino::kShm ? move(segments_) : move(semaphores_);
}

void Engine::releaseShmSem(Handle& h) {
  const uint64_t ino = h.segment ? ino::make(ino::Kind::Segment, h.segment->id)
                                 : ino::make(ino::Kind::Semaphore, h.semaphore->id);
  if (h.semaphore) h.semaphore->pollers.erase(h.fh);
  auto it = shmSemOpens_.find(ino);
  if (it == shmSemOpens_.end() || --it->second > 0) return;
  shmSemOpens_.erase(it);
  if (h.segment && h.segment->unlinked) {
    releaseBytes(h.segment->data.size());
    segmentsById_.erase(h.segment->id);
  }
  if (h.semaphore && h.semaphore->unlinked) semaphoresById_.erase(h.semaphore->id);
}

bool Engine::cancelSemWaiter(WaiterId id, After& after) {
  auto home = semWaiterHomes_.find(id);
  if (home == semWaiterHomes_.end()) return false;
  Semaphore& sem = *home->second;
  semWaiterHomes_.erase(home);
  auto it = std::find_if(sem.waiters.begin(), sem.waiters.end(), [&](const Waiter& w) { return w.id == id; });
  if (it != sem.waiters.end()) {
    after.push_back([d = std::move(it->onRead)] { d(fail(EINTR)); });
    sem.waiters.erase(it);
    --receiversWaiting_;
  }
  return true;
}

void Engine::shutdownShmSem(After& after) {
  for (auto& [id, sem] : semaphoresById_) {
    for (auto& w : sem->waiters) after.push_back([d = std::move(w.onRead)] { d(fail(ESHUTDOWN)); });
    sem->waiters.clear();
    sem->pollers.clear();
  }
  semWaiterHomes_.clear();
}

}  // namespace ipcfs
