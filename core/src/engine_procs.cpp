// Direct communication (procs/): every live process has an inbox, a mailbox named by its
// pid. Inboxes are made on first use and retired when their process exits, so a recycled
// pid starts with an empty one. Only the process, its descendants and root may receive
// from or browse an inbox; only callers allowed to signal the process may send to it.
#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>

#include <fmt/format.h>

#include "clock.hpp"
#include "ipcfs/engine.hpp"
#include "ipcfs/inode.hpp"
#include "objects.hpp"

namespace ipcfs {

using detail::Mailbox;
using detail::Message;

namespace {

constexpr uint64_t kFirstEntry = 3;  // as in engine_namespace.cpp: "." and ".." come first

// A pid as a name: decimal, no sign, no leading zero, below PID_MAX_LIMIT.
std::optional<pid_t> parsePid(std::string_view s) {
  pid_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || end != s.data() + s.size() || s.empty() || s.front() == '0' || v <= 0 ||
      static_cast<uint64_t>(v) >= (uint64_t{1} << ino::kPidBits))
    return std::nullopt;
  return v;
}

int64_t monotonicNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// A lineage changes only when an ancestor exits and the sender is reparented; a batch of
// messages from one writer within this window shares one reading of /proc.
constexpr int64_t kLineageReuseNs = 100'000'000;

}  // namespace

bool Engine::inboxOwnerAlive(const Mailbox& box) const {
  return processes_->instance(box.owner) == box.ownerInstance;
}

// The process itself, its descendants, and root.
bool Engine::mayBrowse(const Mailbox& box, const Caller& who) const {
  if (who.uid == 0) return true;
  return processes_->descendsFrom(who.pid, box.owner);
}

// kill(2)'s rule: the caller's uid is the process's real or saved uid (or the caller is root).
bool Engine::maySend(const Mailbox& box, const Caller& who) const {
  if (who.uid == 0) return true;
  auto creds = processes_->credentials(box.owner);
  return creds && (creds->realUid == who.uid || creds->savedUid == who.uid);
}

Status Engine::checkInboxAccess(const Mailbox& box, const Caller& who, bool sending) const {
  if (box.owner == 0) return {};
  if (box.removed) return fail(ENOENT);
  return (sending ? maySend(box, who) : mayBrowse(box, who)) ? Status{} : fail(EACCES);
}

// The inbox of a live process, made on first use. It is owned by the process's real uid,
// read again at every lookup (a process that drops privileges takes its inbox along).
Engine::MailboxPtr Engine::ensureInbox(pid_t pid, uint64_t instance, After& after) {
  auto creds = processes_->credentials(pid);
  if (auto it = inboxesByPid_.find(pid); it != inboxesByPid_.end()) {
    if (it->second->ownerInstance == instance) {
      if (creds) it->second->uid = creds->realUid;
      return it->second;
    }
    retireInbox(it->second, after);  // an earlier process with this pid
  }
  auto box = std::make_shared<Mailbox>();
  box->id = nextMailboxId_++;
  box->name = std::to_string(pid);
  box->owner = pid;
  box->ownerInstance = instance;
  // Owned by the process's user and closed to others, so that with default_permissions the
  // kernel's checks agree with the engine's.
  box->mode = 0700;
  if (creds) box->uid = creds->realUid;
  box->gid = limits_.ownerGid;
  box->atime = box->mtime = box->ctime = now();
  box->maxMsgSize = limits_.defaultMaxMsgSize;
  inboxesById_.emplace(box->id, box);
  inboxesByPid_[pid] = box;
  return box;
}

// The process exited: what was queued for it is discarded, its waiters get EIDRM.
void Engine::retireInbox(const MailboxPtr& box, After& after) {
  while (!box->queue.empty()) {
    MessagePtr msg = box->queue.front();
    unqueue(*box, msg);
    releaseBytes(msg->size());
    settleReceipt(*msg, fmt::format("discarded {}\n", msg->seq), after);
    ++discarded_;
    ++inboxDiscarded_;
  }
  destroyMailbox(box, after);
}

void Engine::reapExitedLocked(After& after) {
  std::vector<MailboxPtr> exited;
  for (const auto& [id, box] : inboxesById_)
    if (!inboxOwnerAlive(*box)) exited.push_back(box);
  for (const auto& box : exited) retireInbox(box, after);
}

void Engine::reapExited() {
  After after;
  {
    std::lock_guard lock(mutex_);
    if (shutDown_) return;
    reapExitedLocked(after);
  }
  run(after);
}

Result<struct stat> Engine::lookupProcs(std::string_view name, const Caller& who, After& after) {
  if (name == "self") {
    if (who.pid <= 0) return fail(ENOENT);
    return *statProcs(ino::kProcsSelf);
  }
  auto pid = parsePid(name);
  if (!pid) return fail(ENOENT);
  auto process = processes_->stat(*pid);
  if (!process) {
    if (auto it = inboxesByPid_.find(*pid); it != inboxesByPid_.end()) retireInbox(it->second, after);
    return fail(ENOENT);
  }
  return mailboxStat(*ensureInbox(*pid, process->instance, after));
}

bool Engine::hasMessagesFrom(const Mailbox& box, pid_t from) const {
  return std::any_of(box.queue.begin(), box.queue.end(),
                     [&](const auto& msg) { return detail::sentBy(*msg, from); });
}

// procs/P/from/Q exists while Q lives or messages from Q are queued.
Result<struct stat> Engine::lookupFrom(uint64_t inboxId, std::string_view name, const Caller& who) {
  auto box = mailboxById(inboxId);
  if (!box || box->owner == 0) return fail(ENOENT);
  if (auto ok = checkInboxAccess(*box, who, false); !ok) return fail(ok.error());
  auto q = parsePid(name);
  if (!q || (!processes_->stat(*q) && !hasMessagesFrom(*box, *q))) return fail(ENOENT);
  return *statProcs(ino::make(ino::Kind::From, ino::fromId(box->id, static_cast<uint64_t>(*q))));
}

// procs/ lists `self` and the inboxes holding messages or waiters.
void Engine::readdirProcs(uint64_t from, const std::function<bool(const DirEntry&)>& add) const {
  if (from == 0 && !add({"self", **statProcs(ino::kProcsSelf), kFirstEntry})) return;
  for (auto it = inboxesById_.lower_bound(std::max<uint64_t>(from, 1)); it != inboxesById_.end(); ++it) {
    const Mailbox& box = *it->second;
    if (box.queue.empty() && box.receivers.empty() && box.senders.empty()) continue;
    if (!add({box.name, mailboxStat(box), kFirstEntry + box.id})) return;
  }
}

// Attributes of procs/self, procs/P/from/ and procs/P/from/Q; nullopt for other nodes.
std::optional<Result<struct stat>> Engine::statProcs(uint64_t ino) const {
  struct stat st{};
  st.st_ino = ino;
  st.st_blksize = 4096;
  st.st_nlink = 1;
  if (ino == ino::kProcsSelf) {
    // The target depends on who reads the link, so the size says nothing (like /proc/self's
    // own size, readlink(2) is what counts).
    st.st_mode = S_IFLNK | 0777;
    st.st_uid = limits_.ownerUid;
    st.st_gid = limits_.ownerGid;
    const timespec t = now();
    st.st_atim = st.st_mtim = st.st_ctim = t;
    return st;
  }
  const auto kind = ino::kindOf(ino);
  if (kind != ino::Kind::FromDir && kind != ino::Kind::From) return std::nullopt;
  const uint64_t inboxId = kind == ino::Kind::FromDir ? ino::idOf(ino) : ino::inboxOfFrom(ino::idOf(ino));
  auto box = mailboxById(inboxId);
  if (!box || box->owner == 0) return fail(ENOENT);
  st.st_mode = kind == ino::Kind::FromDir ? (S_IFDIR | (box->mode & 0555)) : (S_IFREG | (box->mode & 0444));
  if (kind == ino::Kind::FromDir) st.st_nlink = 2;
  st.st_uid = box->uid;
  st.st_gid = box->gid;
  st.st_atim = box->atime;
  st.st_mtim = box->mtime;
  st.st_ctim = box->ctime;
  return st;
}

// A message entering an inbox remembers who sent it and that sender's ancestors.
void Engine::recordLineage(Message& msg) {
  if (msg.lineage() || msg.senderPid <= 0) return;
  const int64_t t = monotonicNs();
  if (!lastLineage_ || lastLineagePid_ != msg.senderPid || t - lastLineageAt_ > kLineageReuseNs) {
    lastLineage_ = std::make_shared<const std::vector<pid_t>>(processes_->lineage(msg.senderPid));
    lastLineagePid_ = msg.senderPid;
    lastLineageAt_ = t;
  }
  msg.setLineage(lastLineage_);
}

}  // namespace ipcfs
