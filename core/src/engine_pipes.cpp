// pipes/: FIFO nodes and duplex pipes.
//
// A FIFO node (mkfifo) is only a name here: the kernel's pipe code carries its bytes and
// the daemon never sees an open of it. A duplex pipe (a regular file created in pipes/)
// is carried by the engine: its first two opens are its two ends, bytes written on one
// are read from the other, each direction buffered up to kPipeBufferSize. Blocked reads
// and writes are parked waiters, like receives.
#include <fcntl.h>
#include <poll.h>

#include <algorithm>
#include <cerrno>

#include "clock.hpp"
#include "ipcfs/engine.hpp"
#include "ipcfs/inode.hpp"
#include "names.hpp"
#include "objects.hpp"

namespace ipcfs {

using detail::Handle;
using detail::HandleKind;
using detail::Pipe;
using detail::PipeEnd;
using detail::WaitKind;
using detail::Waiter;

namespace {

using State = PipeEnd::State;

struct stat pipeStat(const Pipe& p) {
  struct stat st{};
  st.st_ino = ino::make(ino::Kind::Pipe, p.id);
  st.st_mode = (p.fifo ? S_IFIFO : S_IFREG) | p.mode;
  st.st_nlink = 1;
  st.st_uid = p.uid;
  st.st_gid = p.gid;
  st.st_blksize = 4096;
  st.st_atim = p.atime;
  st.st_mtim = p.mtime;
  st.st_ctim = p.ctime;
  return st;  // size 0: a read waits for the peer
}

int peerOf(int end) { return 1 - end; }

struct stat pipeDirStat(const detail::PipeDir& d) {
  struct stat st{};
  st.st_ino = ino::make(ino::Kind::PipeDir, d.id);
  st.st_mode = S_IFDIR | d.mode;
  st.st_nlink = 2;
  st.st_uid = d.uid;
  st.st_gid = d.gid;
  st.st_blksize = 4096;
  st.st_atim = d.atime;
  st.st_mtim = d.mtime;
  st.st_ctim = d.ctime;
  return st;
}

}  // namespace

// REQUIRES: mutex_ held (for everything below).
std::optional<Result<struct stat>> Engine::statPipe(uint64_t ino) const {
  if (ino::kindOf(ino) == ino::Kind::PipeDir) {
    auto it = pipeDirs_.find(ino::idOf(ino));
    if (it == pipeDirs_.end()) return Result<struct stat>(fail(ENOENT));
    return Result<struct stat>(pipeDirStat(*it->second));
  }
  if (ino::kindOf(ino) != ino::Kind::Pipe) return std::nullopt;
  auto it = pipesById_.find(ino::idOf(ino));
  if (it == pipesById_.end()) return Result<struct stat>(fail(ENOENT));
  return Result<struct stat>(pipeStat(*it->second));
}

bool Engine::isPipesDir(uint64_t ino) const {
  return ino == ino::kPipes || (ino::kindOf(ino) == ino::Kind::PipeDir && pipeDirs_.contains(ino::idOf(ino)));
}

Result<struct stat> Engine::lookupPipe(uint64_t dir, std::string_view name) const {
  const PipeKey key{dir, std::string(name)};
  if (auto d = pipeDirNames_.find(key); d != pipeDirNames_.end()) return pipeDirStat(*d->second);
  auto it = pipes_.find(key);
  if (it == pipes_.end()) return fail(ENOENT);
  return pipeStat(*it->second);
}

void Engine::readdirPipes(uint64_t dir, uint64_t from, const std::function<bool(const DirEntry&)>& add) const {
  constexpr uint64_t kFirstEntry = 3;  // as in engine_namespace.cpp
  // Listed by id (pipes and directories share one id counter) so paging resumes in place.
  std::map<uint64_t, std::pair<std::string_view, struct stat>> children;
  for (const auto& [key, d] : pipeDirNames_)
    if (key.first == dir && d->id >= from) children.emplace(d->id, std::pair{std::string_view(d->name), pipeDirStat(*d)});
  for (const auto& [key, p] : pipes_)
    if (key.first == dir && p->id >= from) children.emplace(p->id, std::pair{std::string_view(p->name), pipeStat(*p)});
  for (const auto& [id, entry] : children)
    if (!add({entry.first, entry.second, kFirstEntry + id})) return;
}

bool Engine::pipeNameTaken(uint64_t dir, std::string_view name) const {
  const PipeKey key{dir, std::string(name)};
  return pipes_.contains(key) || pipeDirNames_.contains(key);
}

namespace {

// As in any Linux directory with the set-group-ID bit: what is made in it belongs to the
// directory's group, and a directory made in it carries the bit on.
const detail::PipeDir* findPipeDir(const std::map<uint64_t, std::shared_ptr<detail::PipeDir>>& dirs, uint64_t ino) {
  if (ino::kindOf(ino) != ino::Kind::PipeDir) return nullptr;  // pipes/ itself: 1777, no set-group-ID
  auto it = dirs.find(ino::idOf(ino));
  return it == dirs.end() ? nullptr : it->second.get();
}

template <class Node>
void inheritGroup(const detail::PipeDir* parent, Node& node, bool isDir) {
  if (!parent || !(parent->mode & S_ISGID)) return;
  node.gid = parent->gid;
  if (isDir) node.mode |= S_ISGID;
}

}  // namespace

Result<struct stat> Engine::mknod(uint64_t parent, std::string_view name, mode_t mode, const Caller& who) {
  Result<struct stat> result = mknodUncommitted(parent, name, mode, who);
  After none;
  commitSync(none);
  return result;
}

Result<struct stat> Engine::mknodUncommitted(uint64_t parent, std::string_view name, mode_t mode, const Caller& who) {
  std::lock_guard lock(mutex_);
  if (!isPipesDir(parent) || !S_ISFIFO(mode)) return fail(statOf(parent) ? EPERM : ENOENT);
  if (auto ok = validateName(name); !ok) return fail(ok.error());
  if (pipeNameTaken(parent, name)) return fail(EEXIST);
  auto p = std::make_shared<Pipe>();
  p->id = nextShmSemId_++;
  p->dir = parent;
  p->name = std::string(name);
  p->mode = mode & 07777;
  p->uid = who.uid;
  p->gid = who.gid;
  inheritGroup(findPipeDir(pipeDirs_, parent), *p, false);
  p->atime = p->mtime = p->ctime = now();
  p->fifo = true;
  pipes_.emplace(PipeKey{parent, p->name}, p);
  pipesById_.emplace(p->id, p);
  if (journal_) journalPut(*p);
  return pipeStat(*p);
}

Result<struct stat> Engine::mkdirPipes(uint64_t dir, std::string_view name, mode_t mode, const Caller& who) {
  if (auto ok = validateName(name); !ok) return fail(ok.error());
  if (pipeNameTaken(dir, name)) return fail(EEXIST);
  auto d = std::make_shared<detail::PipeDir>();
  d->id = nextShmSemId_++;
  d->dir = dir;
  d->name = std::string(name);
  d->mode = mode & 07777;
  d->uid = who.uid;
  d->gid = who.gid;
  inheritGroup(findPipeDir(pipeDirs_, dir), *d, true);
  d->atime = d->mtime = d->ctime = now();
  pipeDirNames_.emplace(PipeKey{dir, d->name}, d);
  pipeDirs_.emplace(d->id, d);
  if (journal_) journalPut(*d);
  return pipeDirStat(*d);
}

Status Engine::rmdirPipes(uint64_t dir, std::string_view name) {
  auto it = pipeDirNames_.find(PipeKey{dir, std::string(name)});
  if (it == pipeDirNames_.end()) return fail(pipes_.contains(PipeKey{dir, std::string(name)}) ? ENOTDIR : ENOENT);
  const uint64_t self = ino::make(ino::Kind::PipeDir, it->second->id);
  for (const auto& [key, p] : pipes_)
    if (key.first == self) return fail(ENOTEMPTY);
  for (const auto& [key, d] : pipeDirNames_)
    if (key.first == self) return fail(ENOTEMPTY);
  if (journal_) journalGone(*it->second);
  pipeDirs_.erase(it->second->id);
  pipeDirNames_.erase(it);
  return {};
}

namespace {

// Takes a free end of a duplex pipe for a new open file.
std::optional<int> takeEnd(Pipe& p) {
  for (int e = 0; e < 2; ++e) {
    if (p.ends[e].state != State::Open) {
      p.ends[e].state = State::Open;
      return e;
    }
  }
  return std::nullopt;
}

}  // namespace

Result<std::pair<struct stat, Opened>> Engine::createPipe(uint64_t dir, std::string_view name, mode_t mode,
                                                          int flags, const Caller& who) {
  if (auto ok = validateName(name); !ok) return fail(ok.error());
  if (pipeDirNames_.contains(PipeKey{dir, std::string(name)})) return fail(EISDIR);
  if (auto existing = pipes_.find(PipeKey{dir, std::string(name)}); existing != pipes_.end()) {
    if (flags & O_EXCL) return fail(EEXIST);
    auto opened = openPipe(ino::make(ino::Kind::Pipe, existing->second->id), flags);
    if (!opened) return fail(opened.error());
    return std::pair{pipeStat(*existing->second), *opened};
  }
  auto p = std::make_shared<Pipe>();
  p->id = nextShmSemId_++;
  p->dir = dir;
  p->name = std::string(name);
  p->mode = mode & 07777;
  p->uid = who.uid;
  p->gid = who.gid;
  inheritGroup(findPipeDir(pipeDirs_, dir), *p, false);
  p->atime = p->mtime = p->ctime = now();
  pipes_.emplace(PipeKey{dir, p->name}, p);
  pipesById_.emplace(p->id, p);
  if (journal_) journalPut(*p);
  auto opened = openPipe(ino::make(ino::Kind::Pipe, p->id), flags);
  if (!opened) return fail(opened.error());
  return std::pair{pipeStat(*p), *opened};
}

Result<Opened> Engine::openPipe(uint64_t ino, int flags) {
  auto it = pipesById_.find(ino::idOf(ino));
  if (it == pipesById_.end()) return fail(ENOENT);
  Pipe& p = *it->second;
  if (p.fifo) return fail(ENXIO);  // the kernel opens FIFOs itself; never reached
  auto end = takeEnd(p);
  if (!end) return fail(EBUSY);  // both ends are held
  auto h = std::make_unique<Handle>();
  h->kind = HandleKind::PipeEnd;
  h->pipe = it->second;
  h->end = *end;
  h->nonblock = (flags & O_NONBLOCK) != 0;
  Opened opened;
  opened.nonseekable = true;  // a stream: one thread may read while another writes
  opened.fh = addHandle(std::move(h));
  // The peer may have been waiting for bytes from a closed end: the end is back.
  return opened;
}

// Moves what can move on end `end`: bytes to its parked readers, room to its peer's
// parked writers, EOF/EPIPE once the other side is gone, and wakes pollers.
void Engine::servePipeEnd(Pipe& p, int end, After& after) {
  PipeEnd& here = p.ends[end];
  PipeEnd& peer = p.ends[peerOf(end)];
  // Writers of the peer fill our inbound buffer.
  while (!peer.writers.empty()) {
    Waiter& w = peer.writers.front();
    if (here.state == State::Closed) {
      Result<size_t> r = w.done > 0 ? Result<size_t>(w.done) : Result<size_t>(fail(EPIPE));
      after.push_back([d = std::move(w.onWrite), r] { d(r); });
    } else {
      const size_t room = kPipeBufferSize - std::min(kPipeBufferSize, here.inbound.size());
      const size_t rest = w.data.size() - w.done;
      const bool atomic = w.data.size() <= kPipeAtomicWrite;
      const size_t n = atomic ? (room >= rest ? rest : 0) : std::min(room, rest);
      if (n == 0) break;
      here.inbound.append(w.data, w.done, n);
      w.done += n;
      p.bytesMoved += n;
      pipeBytesMoved_ += n;
      if (w.done < w.data.size()) break;
      after.push_back([d = std::move(w.onWrite), total = w.data.size()] { d(total); });
    }
    pipeWaiterHomes_.erase(w.id);
    --sendersWaiting_;
    peer.writers.pop_front();
  }
  // Our readers drain it.
  while (!here.readers.empty() && (!here.inbound.empty() || peer.state == State::Closed)) {
    Waiter w = std::move(here.readers.front());
    here.readers.pop_front();
    pipeWaiterHomes_.erase(w.id);
    --receiversWaiting_;
    const size_t n = std::min(w.size, here.inbound.size());
    auto chunk = std::make_shared<const std::string>(here.inbound.substr(0, n));
    here.inbound.erase(0, n);
    after.push_back([d = std::move(w.onRead), b = Bytes::slice(chunk, 0, n)] { d(b); });
  }
  for (auto& [fh, notify] : here.pollers) after.push_back(std::move(notify));
  here.pollers.clear();
  for (auto& [fh, notify] : peer.pollers) after.push_back(std::move(notify));
  peer.pollers.clear();
}

std::optional<WaiterId> Engine::readPipe(Handle& h, size_t size, bool nonblock, ReadCompletion& done, After& after) {
  Pipe& p = *h.pipe;
  PipeEnd& here = p.ends[h.end];
  const PipeEnd& peer = p.ends[peerOf(h.end)];
  auto reply = [&](Result<Bytes> r) { after.push_back([d = std::move(done), r] { d(r); }); };
  if (!here.inbound.empty() && here.readers.empty()) {
    const size_t n = std::min(size, here.inbound.size());
    auto chunk = std::make_shared<const std::string>(here.inbound.substr(0, n));
    here.inbound.erase(0, n);
    reply(Bytes::slice(chunk, 0, n));
    servePipeEnd(p, h.end, after);  // room for the peer's writers
    return std::nullopt;
  }
  if (peer.state == State::Closed && here.inbound.empty()) {
    reply(Bytes::empty());  // the peer closed and everything is read: end of file
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
  const WaiterId id = parkRead(here.readers, h.fh, size, done);
  pipeWaiterHomes_.emplace(id, &p);
  return id;
}

std::optional<WaiterId> Engine::writePipe(Handle& h, std::string_view data, bool nonblock, WriteCompletion& done,
                                          After& after) {
  Pipe& p = *h.pipe;
  PipeEnd& self = p.ends[h.end];
  PipeEnd& peer = p.ends[peerOf(h.end)];
  auto reply = [&](Result<size_t> r) { after.push_back([d = std::move(done), r] { d(r); }); };
  if (peer.state == State::Closed) {
    reply(fail(EPIPE));  // (no SIGPIPE: a FUSE daemon cannot raise it in the writer)
    return std::nullopt;
  }
  if (data.empty()) {
    reply(size_t{0});
    return std::nullopt;
  }
  const size_t room = kPipeBufferSize - std::min(kPipeBufferSize, peer.inbound.size());
  const bool atomic = data.size() <= kPipeAtomicWrite;
  size_t now = 0;
  if (self.writers.empty()) now = atomic ? (room >= data.size() ? data.size() : 0) : std::min(room, data.size());
  if (now > 0) {
    peer.inbound.append(data.substr(0, now));
    p.bytesMoved += now;
    pipeBytesMoved_ += now;
    servePipeEnd(p, peerOf(h.end), after);  // the peer's readers
  }
  if (now == data.size()) {
    reply(now);
    return std::nullopt;
  }
  if (nonblock) {
    reply(now > 0 ? Result<size_t>(now) : Result<size_t>(fail(EAGAIN)));
    return std::nullopt;
  }
  Waiter w;
  w.kind = WaitKind::Send;
  w.id = nextWaiter_++;
  w.fh = h.fh;
  w.onWrite = std::move(done);
  w.data = std::string(data);
  w.done = now;
  const WaiterId id = w.id;
  self.writers.push_back(std::move(w));
  pipeWaiterHomes_.emplace(id, &p);
  ++sendersWaiting_;
  return id;
}

unsigned Engine::pollPipe(Handle& h, PollNotify& notify) {
  Pipe& p = *h.pipe;
  PipeEnd& here = p.ends[h.end];
  const PipeEnd& peer = p.ends[peerOf(h.end)];
  unsigned events = 0;
  if (!here.inbound.empty()) events |= POLLIN | POLLRDNORM;
  if (peer.state == State::Closed) events |= here.inbound.empty() ? POLLHUP : 0;
  if (peer.state == State::Closed) events |= POLLERR;  // writes would fail with EPIPE
  else if (peer.inbound.size() < kPipeBufferSize) events |= POLLOUT | POLLWRNORM;
  if (notify) here.pollers[h.fh] = std::move(notify);
  return events;
}

Result<struct stat> Engine::setattrPipe(uint64_t ino, const AttrChange& change) {
  if (ino::kindOf(ino) == ino::Kind::PipeDir) {
    auto d = pipeDirs_.find(ino::idOf(ino));
    if (d == pipeDirs_.end()) return fail(ENOENT);
    if (change.size) return fail(EISDIR);
    detail::applyChange(*d->second, change, now());
    if (journal_) journalPut(*d->second);
    return pipeDirStat(*d->second);
  }
  auto it = pipesById_.find(ino::idOf(ino));
  if (it == pipesById_.end()) return fail(ENOENT);
  Pipe& p = *it->second;
  // O_TRUNC on an end and `touch` are accepted: a pipe has no size to change.
  detail::applyChange(p, change, now());
  if (journal_ && !p.unlinked) journalPut(p);
  return pipeStat(p);
}

Status Engine::unlinkPipe(uint64_t dir, std::string_view name) {
  if (pipeDirNames_.contains(PipeKey{dir, std::string(name)})) return fail(EISDIR);
  auto it = pipes_.find(PipeKey{dir, std::string(name)});
  if (it == pipes_.end()) return fail(ENOENT);
  // Open ends keep working: a parent that opened both ends, unlinked the name and forked
  // holds an ordinary pipe nobody else can acquire.
  std::shared_ptr<Pipe> p = it->second;
  if (journal_) journalGone(*p);
  p->unlinked = true;
  pipes_.erase(it);
  const bool open = p->ends[0].state == State::Open || p->ends[1].state == State::Open;
  if (!open) pipesById_.erase(p->id);
  return {};
}

Status Engine::renamePipe(uint64_t dir, std::string_view name, uint64_t newDir, std::string_view newName) {
  const PipeKey from{dir, std::string(name)}, to{newDir, std::string(newName)};
  if (from == to) return pipeNameTaken(dir, name) ? Status{} : fail(ENOENT);
  if (pipeNameTaken(newDir, newName)) return fail(EEXIST);  // never replaced silently
  if (auto it = pipes_.find(from); it != pipes_.end()) {
    auto p = it->second;
    pipes_.erase(it);
    p->dir = newDir;
    p->name = to.second;
    p->ctime = now();
    pipes_.emplace(to, p);
    if (journal_) journalPut(*p);
    return {};
  }
  auto d = pipeDirNames_.find(from);
  if (d == pipeDirNames_.end()) return fail(ENOENT);
  // A directory may not move into itself or below itself.
  for (uint64_t at = newDir; ino::kindOf(at) == ino::Kind::PipeDir;) {
    if (ino::idOf(at) == d->second->id) return fail(EINVAL);
    auto up = pipeDirs_.find(ino::idOf(at));
    if (up == pipeDirs_.end()) break;
    at = up->second->dir;
  }
  auto moved = d->second;
  pipeDirNames_.erase(d);
  moved->dir = newDir;
  moved->name = to.second;
  moved->ctime = now();
  pipeDirNames_.emplace(to, moved);
  if (journal_) journalPut(*moved);
  return {};
}

void Engine::releasePipe(Handle& h, After& after) {
  Pipe& p = *h.pipe;
  PipeEnd& here = p.ends[h.end];
  here.state = State::Closed;
  here.pollers.erase(h.fh);
  servePipeEnd(p, peerOf(h.end), after);  // the peer's readers see EOF once drained
  servePipeEnd(p, h.end, after);          // the peer's writers get EPIPE
  const bool open = p.ends[0].state == State::Open || p.ends[1].state == State::Open;
  if (p.unlinked && !open) pipesById_.erase(p.id);
}

bool Engine::cancelPipeWaiter(WaiterId id, After& after) {
  auto home = pipeWaiterHomes_.find(id);
  if (home == pipeWaiterHomes_.end()) return false;
  Pipe& p = *home->second;
  pipeWaiterHomes_.erase(home);
  for (auto& e : p.ends) {
    for (auto* list : {&e.readers, &e.writers}) {
      auto it = std::find_if(list->begin(), list->end(), [&](const Waiter& w) { return w.id == id; });
      if (it == list->end()) continue;
      if (list == &e.readers) {
        --receiversWaiting_;
        after.push_back([d = std::move(it->onRead)] { d(fail(EINTR)); });
      } else {
        --sendersWaiting_;
        // What already went into the buffer stays written: a short count.
        Result<size_t> r = it->done > 0 ? Result<size_t>(it->done) : Result<size_t>(fail(EINTR));
        after.push_back([d = std::move(it->onWrite), r] { d(r); });
      }
      list->erase(it);
      return true;
    }
  }
  return true;
}

void Engine::shutdownPipes(After& after) {
  for (auto& [id, p] : pipesById_) {
    for (auto& e : p->ends) {
      for (auto& w : e.readers) after.push_back([d = std::move(w.onRead)] { d(fail(ESHUTDOWN)); });
      for (auto& w : e.writers) after.push_back([d = std::move(w.onWrite)] { d(fail(ESHUTDOWN)); });
      e.readers.clear();
      e.writers.clear();
      e.pollers.clear();
    }
  }
  pipeWaiterHomes_.clear();
}

}  // namespace ipcfs
