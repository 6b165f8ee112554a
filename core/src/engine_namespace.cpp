// The namespace: lookups, listings, and making, removing and renaming mailboxes and messages.
#include <linux/fs.h>  // RENAME_NOREPLACE, RENAME_EXCHANGE

#include <cerrno>
#include <charconv>

#include <fmt/format.h>

#include "clock.hpp"
#include "ipcfs/engine.hpp"
#include "ipcfs/inode.hpp"
#include "names.hpp"
#include "objects.hpp"

namespace ipcfs {

using detail::Mailbox;
using detail::Message;
using detail::MessageState;

namespace {

struct FixedEntry {
  std::string_view name;
  uint64_t ino;
};
constexpr FixedEntry kTopLevel[] = {{"mailboxes", ino::kMailboxes}, {"procs", ino::kProcs}, {"pipes", ino::kPipes},
                                    {"shm", ino::kShm},             {"sem", ino::kSem},     {"by-id", ino::kById}};

struct ControlEntry {
  std::string_view name;
  ino::Kind kind;
};
constexpr ControlEntry kControlNodes[] = {{".send", ino::Kind::Send},
                                          {".receive", ino::Kind::Receive},
                                          {".status", ino::Kind::Status},
                                          {".send-lines", ino::Kind::SendLines},
                                          {".receive-lines", ino::Kind::ReceiveLines},
                                          {".send-frames", ino::Kind::SendFrames},
                                          {".receive-frames", ino::Kind::ReceiveFrames}};

// Directory offsets: 1 and 2 are "." and "..", entries start at kFirstEntry + their key.
constexpr uint64_t kFirstEntry = 3;
// Added to a message's queue order (negative for messages put back at the head) to make
// its directory offset.
constexpr uint64_t kOrderBias = uint64_t{1} << 61;

std::optional<uint64_t> parseId(std::string_view s) {
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || end != s.data() + s.size() || s.empty() || s.front() == '0') return std::nullopt;
  return v;
}

}  // namespace

// Mailboxes and inboxes share one id space.
Engine::MailboxPtr Engine::mailboxById(uint64_t id) const {
  if (auto it = mailboxesById_.find(id); it != mailboxesById_.end()) return it->second;
  auto it = inboxesById_.find(id);
  return it == inboxesById_.end() ? nullptr : it->second;
}

Engine::MailboxPtr Engine::mailboxByIno(uint64_t ino) const {
  const auto kind = ino::kindOf(ino);
  return kind == ino::Kind::Mailbox || kind == ino::Kind::Inbox ? mailboxById(ino::idOf(ino)) : nullptr;
}

Result<struct stat> Engine::lookup(uint64_t parent, std::string_view name, const Caller& who) {
  // A name not known here may be another host's: asked of the backend (EIO when it cannot
  // be reached, rather than a false ENOENT).
  if (backend_ && (parent == ino::kMailboxes || parent == ino::kById || parent == ino::kSem ||
                   ino::kindOf(parent) == ino::Kind::Mailbox)) {
    if (auto asked = refreshIfMissing(parent, name); !asked) return fail(asked.error());
  }
  After after;
  Result<struct stat> result = [&]() -> Result<struct stat> {
  std::lock_guard lock(mutex_);
  if (parent == ino::kProcs) return lookupProcs(name, who, after);
  if (ino::kindOf(parent) == ino::Kind::FromDir) return lookupFrom(ino::idOf(parent), name, who);
  if (parent == ino::kRoot) {
    for (const auto& e : kTopLevel)
      if (e.name == name) return statOf(e.ino);
    if (name == ".status") return statOf(ino::kRootStatus);
    if (name == ".metrics") return statOf(ino::kRootMetrics);
    return fail(ENOENT);
  }
  if (parent == ino::kMailboxes) {
    auto it = mailboxesByName_.find(name);
    if (it == mailboxesByName_.end()) return fail(ENOENT);
    return mailboxStat(*it->second);
  }
  if (parent == ino::kShm || parent == ino::kSem) return lookupShmSem(parent, name);
  if (isPipesDir(parent)) return lookupPipe(parent, name);
  if (parent == ino::kById) {
    auto id = parseId(name);
    if (!id || !mailboxById(*id)) return fail(ENOENT);
    return statOf(ino::make(ino::Kind::IdLink, *id));
  }
  if (auto box = mailboxByIno(parent)) {
    for (const auto& c : kControlNodes)
      if (c.name == name) return statOf(ino::make(c.kind, box->id));
    if (box->owner != 0 && name == "from") return statOf(ino::make(ino::Kind::FromDir, box->id));
    detail::Message* found = detail::findByName(*box, name);
    if (!found || found->state == MessageState::InFlight) return fail(ENOENT);
    // A free name resolves to ENOENT for everyone, so that a sender may create a message file
    // or move one in under it; a taken one only for those who may browse.
    if (auto ok = checkInboxAccess(*box, who, false); !ok) return fail(ok.error());
    return messageStat(*found);
  }
  auto parentStat = statOf(parent);
  if (!parentStat) return fail(ENOENT);
  return fail(S_ISDIR(parentStat->st_mode) ? ENOENT : ENOTDIR);
  }();
  run(after);
  return result;
}

Result<struct stat> Engine::getattr(uint64_t ino) {
  std::lock_guard lock(mutex_);
  return statOf(ino);
}

Result<struct stat> Engine::setattr(uint64_t ino, const AttrChange& change) {
  Result<struct stat> result = setattrUncommitted(ino, change);
  if (result && backend_) {
    if (auto shared = shareSetattr(ino, *result, change); !shared) return fail(shared.error());
  }
  After none;
  commitSync(none);
  return result;
}

Result<struct stat> Engine::setattrUncommitted(uint64_t ino, const AttrChange& change) {
  std::lock_guard lock(mutex_);
  const timespec t = now();
  auto applyOwnerModeTimes = [&](mode_t& mode, uid_t& uid, gid_t& gid, timespec& atime, timespec& mtime,
                                 timespec& ctime) {
    if (change.mode) mode = *change.mode & 07777;
    if (change.uid) uid = *change.uid;
    if (change.gid) gid = *change.gid;
    if (change.atime) atime = *change.atime;
    if (change.mtime) mtime = *change.mtime;
    ctime = t;
  };
  if (ino::kindOf(ino) == ino::Kind::Segment || ino::kindOf(ino) == ino::Kind::Semaphore)
    return setattrShmSem(ino, change);
  if (ino::kindOf(ino) == ino::Kind::Pipe || ino::kindOf(ino) == ino::Kind::PipeDir) return setattrPipe(ino, change);
  switch (ino::kindOf(ino)) {
    case ino::Kind::Mailbox: {
      auto box = mailboxById(ino::idOf(ino));
      if (!box) return fail(ENOENT);
      if (change.size) return fail(EISDIR);
      applyOwnerModeTimes(box->mode, box->uid, box->gid, box->atime, box->mtime, box->ctime);
      if (journal_) journalPut(*box);
      return mailboxStat(*box);
    }
    case ino::Kind::Message: {
      Message* found = messages_->find(ino::idOf(ino));
      if (!found) return fail(ENOENT);
      Message& msg = *found;
      if (change.size) {
        // Queued contents are immutable; a drop-in being written may be truncated by its writer.
        if (msg.state != MessageState::Composing) return fail(EACCES);
        const auto newSize = static_cast<uint64_t>(*change.size);
        const uint64_t oldSize = msg.size();
        if (newSize > oldSize) {
          if (auto r = reserveBytes(newSize - oldSize); !r) return fail(r.error());
        } else {
          releaseBytes(oldSize - newSize);
        }
        msg.body().resize(newSize);
      }
      mode_t mode = msg.mode;
      timespec atime = msg.atime(), mtime = msg.mtime(), ctime = msg.ctime();
      applyOwnerModeTimes(mode, msg.uid_, msg.gid, atime, mtime, ctime);
      msg.mode = static_cast<uint16_t>(mode);
      msg.setTimes(atime, mtime, ctime);
      if (journal_) journalAttrs(msg);
      return messageStat(msg);
    }
    case ino::Kind::Fixed:
    case ino::Kind::Send:
    case ino::Kind::Receive:
    case ino::Kind::Status: {
      // `> .send` truncates and `touch .send` sets times: harmless, accepted and ignored.
      // Modes and owners of these nodes follow their mailbox (or are fixed).
      if (change.mode || change.uid || change.gid) return fail(EPERM);
      return statOf(ino);
    }
    default:
      return fail(EPERM);
  }
}

Result<std::string> Engine::readlink(uint64_t ino, const Caller& who) {
  std::lock_guard lock(mutex_);
  if (ino == ino::kProcsSelf) {
    if (who.pid <= 0) return fail(ENOENT);
    return std::to_string(who.pid);
  }
  if (ino::kindOf(ino) != ino::Kind::IdLink) return fail(EINVAL);
  auto box = mailboxById(ino::idOf(ino));
  if (!box) return fail(ENOENT);
  return "../mailboxes/" + box->name;
}

Status Engine::readdir(uint64_t ino, uint64_t offset, const std::function<bool(const DirEntry&)>& add,
                       const Caller& who) {
  if (ino == ino::kProcs && offset == 0) reapExited();  // list only live processes
  if (backend_ && offset == 0) {  // a listing shows what every host made (EIO: it cannot)
    Status synced;
    if (ino == ino::kMailboxes || ino == ino::kById) synced = syncRemoteMailboxes();
    if (ino == ino::kSem) synced = syncRemoteSemaphores();
    if (ino::kindOf(ino) == ino::Kind::Mailbox) synced = syncRemoteListing(ino::idOf(ino));
    if (!synced) return synced;
  }
  std::lock_guard lock(mutex_);
  auto self = statOf(ino);
  if (!self) return fail(self.error());
  if (!S_ISDIR(self->st_mode)) return fail(ENOTDIR);
  if (auto box = mailboxByIno(ino)) {
    if (auto ok = checkInboxAccess(*box, who, false); !ok) return fail(ok.error());
  }
  if (ino::kindOf(ino) == ino::Kind::FromDir) {
    auto box = mailboxById(ino::idOf(ino));
    if (auto ok = checkInboxAccess(*box, who, false); !ok) return fail(ok.error());
  }

  if (offset < 1 && !add({".", *self, 1})) return {};
  if (offset < 2) {
    struct stat parent = ino == ino::kRoot ? *self : fixedDirStat(ino::kRoot);
    if (!add({"..", parent, 2})) return {};
  }
  const uint64_t from = offset < kFirstEntry ? 0 : offset - kFirstEntry + 1;  // first key still to list

  if (ino == ino::kRoot) {
    for (uint64_t i = from; i < std::size(kTopLevel); ++i)
      if (!add({kTopLevel[i].name, fixedDirStat(kTopLevel[i].ino), kFirstEntry + i})) return {};
    return {};
  }
  if (ino == ino::kMailboxes || ino == ino::kById) {
    for (auto it = mailboxesById_.lower_bound(from); it != mailboxesById_.end(); ++it) {
      const Mailbox& box = *it->second;
      const uint64_t next = kFirstEntry + box.id;
      if (ino == ino::kMailboxes) {
        if (!add({box.name, mailboxStat(box), next})) return {};
      } else {
        const std::string idName = std::to_string(box.id);
        auto st = statOf(ino::make(ino::Kind::IdLink, box.id));
        if (!add({idName, *st, next})) return {};
      }
    }
    return {};
  }
  if (auto box = mailboxByIno(ino); box && box->remote) {
    // A shared mailbox lists what the backend had queued at offset 0, paged by seq.
    for (const auto& l : box->remoteListing)
      if (l->seq >= from && !add({l->name(), messageStat(*l), kFirstEntry + l->seq})) return {};
  } else if (box) {
    // Paged by queue order (kOrderBias keeps the offsets of messages put back at the head
    // positive).
    auto it = std::lower_bound(box->queue.begin(), box->queue.end(), from, [](const MessagePtr& m, uint64_t f) {
      return static_cast<uint64_t>(m->order) + kOrderBias < f;
    });
    for (; it != box->queue.end(); ++it) {
      const detail::Message& msg = **it;
      const std::string name = msg.name();
      if (!add({name, messageStat(msg), kFirstEntry + static_cast<uint64_t>(msg.order) + kOrderBias})) return {};
    }
  }
  if (ino == ino::kShm || ino == ino::kSem) readdirShmSem(ino, from, add);
  if (isPipesDir(ino)) readdirPipes(ino, from, add);
  if (ino == ino::kProcs) readdirProcs(from, add);
  return {};  // from/ lists nothing: its entries are the senders one names
}

Result<struct stat> Engine::mkdir(uint64_t parent, std::string_view name, mode_t mode, const Caller& who) {
  if (backend_ && parent == ino::kMailboxes) return mkdirRemote(name, mode, who);
  Result<struct stat> result = mkdirUncommitted(parent, name, mode, who);
  After none;
  commitSync(none);
  return result;
}

Result<struct stat> Engine::mkdirUncommitted(uint64_t parent, std::string_view name, mode_t mode, const Caller& who) {
  std::lock_guard lock(mutex_);
  if (isPipesDir(parent)) return mkdirPipes(parent, name, mode, who);
  if (parent != ino::kMailboxes) return fail(statOf(parent) ? EPERM : ENOENT);
  if (auto ok = validateName(name); !ok) return fail(ok.error());
  if (mailboxesByName_.contains(name)) return fail(EEXIST);
  auto box = std::make_shared<Mailbox>();
  box->id = nextMailboxId_++;
  box->name = std::string(name);
  box->mode = mode & 07777;
  box->uid = who.uid;
  box->gid = who.gid;
  box->atime = box->mtime = box->ctime = now();
  box->maxMsgSize = limits_.defaultMaxMsgSize;
  mailboxesById_.emplace(box->id, box);
  mailboxesByName_.emplace(box->name, box);
  if (journal_) journalPut(*box);
  return mailboxStat(*box);
}

Status Engine::rmdir(uint64_t parent, std::string_view name) {
  if (backend_ && parent == ino::kMailboxes) return rmdirRemote(name);
  After after;
  Status result = [&]() -> Status {
    std::lock_guard lock(mutex_);
    // The kernel has already refused rmdir of non-directories (ENOTDIR); the removable
    // directories are mailboxes and the plain directories in pipes/.
    if (isPipesDir(parent)) return rmdirPipes(parent, name);
    if (parent != ino::kMailboxes) return fail(EPERM);
    auto it = mailboxesByName_.find(name);
    if (it == mailboxesByName_.end()) return fail(ENOENT);
    MailboxPtr box = it->second;
    // Queued, in-flight and half-written messages all keep the mailbox: nothing is lost.
    if (!box->byName.empty() || !box->bySeq.empty()) return fail(ENOTEMPTY);
    if (journal_) {
      for (auto& [fh, h] : handles_)
        if (h->box == box) confirmTaken(*h);  // their removal goes on record before the mailbox's
      journalGone(*box);
    }
    destroyMailbox(box, after);
    return {};
  }();
  commitSync(after);
  return result;
}

// REQUIRES: mutex_ held; the mailbox holds no message.
void Engine::destroyMailbox(const MailboxPtr& box, After& after) {
  box->removed = true;
  // Waiters would wait forever: they get EIDRM, as msgrcv(2) and msgsnd(2) do.
  std::vector<MessagePtr> dropped;  // drop-ins that were waiting to enter
  for (auto* list : {&box->receivers, &box->senders, &box->receipts}) {
    for (auto& w : *list) {
      if (w.msg) dropped.push_back(w.msg);
      waiterHomes_.erase(w.id);
      if (w.kind == detail::WaitKind::Receive) {
        if (auto* h = handle(w.fh)) h->parked.reset();
        --receiversWaiting_;
      } else if (w.kind != detail::WaitKind::Receipt) {
        --sendersWaiting_;
        if (w.msg) releaseBytes(w.msg->size());
        for (const auto& m : w.batch) releaseBytes(m->size());
      }
      after.push_back([w = std::move(w)]() mutable {
        if (w.onRead) w.onRead(fail(EIDRM));
        if (w.onStatus) w.onStatus(fail(EIDRM));
        if (w.onWrite) w.onWrite(fail(EIDRM));
      });
    }
    list->clear();
  }
  for (const auto& msg : dropped) forgetIfOrphan(*box, msg, nullptr);
  wakePollers(*box, after);
  if (box->owner != 0) {
    inboxesById_.erase(box->id);
    if (auto it = inboxesByPid_.find(box->owner); it != inboxesByPid_.end() && it->second == box)
      inboxesByPid_.erase(it);
  } else {
    mailboxesByName_.erase(box->name);
    mailboxesById_.erase(box->id);
  }
}

Status Engine::unlink(uint64_t parent, std::string_view name, const Caller& who) {
  if (backend_ && parent == ino::kSem) return unlinkRemoteSemaphore(name);
  if (backend_ && ino::kindOf(parent) == ino::Kind::Mailbox) {
    // A listed message of a shared mailbox; anything else (a drop-in being written) is local.
    if (auto r = unlinkRemoteMessage(parent, name); r || r.error() != std::errc::no_such_file_or_directory) return r;
  }
  After after;
  Status result = [&]() -> Status {
  std::lock_guard lock(mutex_);
  if (parent == ino::kShm || parent == ino::kSem) return unlinkShmSem(parent, name);
  if (isPipesDir(parent)) return unlinkPipe(parent, name);
  auto box = mailboxByIno(parent);
  if (!box) {
    if (parent == ino::kMailboxes) return fail(mailboxesByName_.contains(name) ? EISDIR : ENOENT);
    if (parent == ino::kRoot || parent == ino::kProcs) return fail(EPERM);
    return fail(ENOENT);
  }
  for (const auto& c : kControlNodes)
    if (c.name == name) return fail(EPERM);
  if (box->owner != 0 && name == "from") return fail(EPERM);
  if (auto ok = checkInboxAccess(*box, who, false); !ok) return fail(ok.error());
  detail::Message* found = detail::findByName(*box, name);
  if (!found || found->state == MessageState::InFlight) return fail(ENOENT);
  if (found->state == MessageState::Queued) {
    MessagePtr msg = *detail::queuePosition(*box, found->order);
    unqueue(*box, msg);
    releaseBytes(msg->size());
    if (journal_) journalGone(*msg);
    settleReceipt(*msg, fmt::format("discarded {}\n", msg->seq), after);
  } else {
    // A drop-in still being written: its writer's further writes go nowhere.
    detail::Message* msg = found;
    detail::eraseName(*box, msg);
    messages_->erase(msg);
    releaseBytes(msg->size());
    msg->body().clear();
    for (auto& [fh, h] : handles_)
      if (h->dropIn.get() == msg) h->discarded = true;
    if (msg->holdsPlace) {
      msg->holdsPlace = false;
      --box->reserved;
    }
  }
  ++discarded_;
  box->mtime = box->ctime = now();
  dispatch(*box, after);  // room for blocked senders
  return {};
  }();
  commitSync(after);
  return result;
}

Status Engine::rename(uint64_t parent, std::string_view name, uint64_t newParent, std::string_view newName,
                      unsigned flags, const Caller& who) {
  if (flags & ~static_cast<unsigned>(RENAME_NOREPLACE)) return fail(EINVAL);
  if (backend_ && parent == ino::kMailboxes && newParent == ino::kMailboxes) return renameRemote(name, newName);
  if (backend_ && parent == ino::kSem && newParent == ino::kSem) return renameRemoteSemaphore(name, newName);
  if (backend_ && parent != newParent && ino::kindOf(parent) == ino::Kind::Mailbox &&
      ino::kindOf(newParent) == ino::Kind::Mailbox) {
    if (auto forwarded = forwardRemote(parent, name, newParent, newName);
        forwarded || forwarded.error() != std::errc::cross_device_link)
      return forwarded;
  }
  After after;
  Status result = [&]() -> Status {
    std::lock_guard lock(mutex_);
    if (auto ok = validateName(newName); !ok) return fail(ok.error());

    if ((parent == ino::kShm || parent == ino::kSem) && newParent == parent)
      return renameShmSem(parent, name, newName);
    if (isPipesDir(parent) && isPipesDir(newParent)) return renamePipe(parent, name, newParent, newName);
    if (parent == ino::kMailboxes && newParent == ino::kMailboxes) {
      auto it = mailboxesByName_.find(name);
      if (it == mailboxesByName_.end()) return fail(ENOENT);
      if (name == newName) return {};
      // Never replace a mailbox: its id, messages and waiters would silently vanish.
      if (mailboxesByName_.contains(newName)) return fail(EEXIST);
      MailboxPtr box = it->second;
      mailboxesByName_.erase(it);
      box->name = std::string(newName);
      box->ctime = now();
      mailboxesByName_.emplace(box->name, box);
      if (journal_) journalPut(*box);
      return {};
    }

    auto from = mailboxByIno(parent);
    auto to = mailboxByIno(newParent);
    if (!from || !to) return fail(EPERM);
    // Within one shared mailbox, or between a shared and a local one: EXDEV, so mv(1) copies
    // it (a send) and removes the original (rm). Between two shared ones: forwardRemote.
    if (from->remote || to->remote) return fail(EXDEV);
    for (const auto& c : kControlNodes)
      if (c.name == name) return fail(EPERM);
    if ((from->owner != 0 && name == "from") || (to->owner != 0 && newName == "from")) return fail(EPERM);
    // Out of an inbox is a receive; into one, a send.
    if (auto ok = checkInboxAccess(*from, who, false); !ok) return fail(ok.error());
    if (auto ok = checkInboxAccess(*to, who, true); !ok) return fail(ok.error());
    detail::Message* found = detail::findByName(*from, name);
    if (!found || found->state == MessageState::InFlight) return fail(ENOENT);
    if (found->state == MessageState::Composing) return fail(EBUSY);
    MessagePtr msg = *detail::queuePosition(*from, found->order);
    if (from == to && name == newName) return {};
    if (detail::findByName(*to, newName)) return fail(EEXIST);
    // Forwarding is a non-blocking send into the target: refused while it is full (at
    // capacity 0, unless a receiver waits), like an O_NONBLOCK send.
    if (from != to && !(to->senders.empty() && (hasRoom(*to) || !to->receivers.empty()))) return fail(EAGAIN);

    if (from == to) {
      detail::eraseName(*from, msg.get());
      msg->setName(std::string(newName));
      detail::addName(*from, msg.get());
      if (journal_) journalMessage(*from, *msg);
    } else {
      // Forward: leave the source queue, join the tail of the target's, same message.
      unqueue(*from, msg);
      msg->setName(std::string(newName));
      if (to->owner != 0) recordLineage(*msg);
      enqueueTail(*to, msg, after);
      settleReceipt(*msg, fmt::format("forwarded {} to {}\n", msg->seq, to->name), after);
      dispatch(*from, after);  // room for blocked senders
      dispatch(*to, after);
      to->mtime = to->ctime = now();
    }
    const timespec t = now();
    msg->setTimes(msg->atime(), msg->mtime(), t);
    from->mtime = from->ctime = t;
    return {};
  }();
  commitSync(after);
  return result;
}

}  // namespace ipcfs
