// Attributes of every node kind and the `.status` texts.
#include <cerrno>
#include <cstring>
#include <fmt/format.h>

#include "clock.hpp"
#include "ipcfs/engine.hpp"
#include "ipcfs/inode.hpp"
#include "objects.hpp"

namespace ipcfs {

using detail::Mailbox;
using detail::Message;
using detail::MessageState;

namespace {

struct stat baseStat(uint64_t ino, mode_t mode, uid_t uid, gid_t gid) {
  struct stat st{};
  st.st_ino = ino;
  st.st_mode = mode;
  st.st_nlink = S_ISDIR(mode) ? 2 : 1;
  st.st_uid = uid;
  st.st_gid = gid;
  st.st_blksize = 4096;
  return st;
}

void setTimes(struct stat& st, const timespec& a, const timespec& m, const timespec& c) {
  st.st_atim = a;
  st.st_mtim = m;
  st.st_ctim = c;
}

const timespec kStartTime = now();

// A name in a `key: value` line: names may hold any byte but '/' and NUL, so a newline (and
// the backslash that escapes it) is escaped, C-style, to keep one line per key.
std::string statusEscaped(std::string_view name) {
  std::string out;
  out.reserve(name.size());
  for (char c : name) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace

struct stat Engine::fixedDirStat(uint64_t ino) const {
  mode_t mode = ino == ino::kRoot ? (S_IFDIR | 0755) : (S_IFDIR | 01777);
  struct stat st = baseStat(ino, mode, limits_.ownerUid, limits_.ownerGid);
  setTimes(st, kStartTime, kStartTime, kStartTime);
  if (ino == ino::kRoot) st.st_nlink = 2 + 6;
  return st;
}

struct stat Engine::mailboxStat(const Mailbox& box) const {
  const auto kind = box.owner != 0 ? ino::Kind::Inbox : ino::Kind::Mailbox;
  struct stat st = baseStat(ino::make(kind, box.id), S_IFDIR | box.mode, box.uid, box.gid);
  setTimes(st, box.atime, box.mtime, box.ctime);
  return st;
}

struct stat Engine::messageStat(const Message& msg) const {
  struct stat st = baseStat(ino::make(ino::Kind::Message, msg.uid), S_IFREG | msg.mode, msg.uid_, msg.gid);
  st.st_size = static_cast<off_t>(msg.size());
  st.st_blocks = (st.st_size + 511) / 512;
  setTimes(st, msg.atime(), msg.mtime(), msg.ctime());
  return st;
}

// REQUIRES: mutex_ held.
Result<struct stat> Engine::statOf(uint64_t ino) const {
  using ino::Kind;
  if (auto st = statShmSem(ino)) return *st;
  if (auto st = statPipe(ino)) return *st;
  if (auto st = statProcs(ino)) return *st;
  const uint64_t id = ino::idOf(ino);
  switch (ino::kindOf(ino)) {
    case Kind::Fixed:
      if (ino >= ino::kRoot && ino <= ino::kById) return fixedDirStat(ino);
      if (ino == ino::kRootStatus || ino == ino::kRootMetrics) {
        struct stat st = baseStat(ino, S_IFREG | 0444, limits_.ownerUid, limits_.ownerGid);
        st.st_size = static_cast<off_t>((ino == ino::kRootStatus ? renderRootStatus() : renderMetrics()).size());
        const timespec t = now();
        setTimes(st, t, t, t);
        return st;
      }
      return fail(ENOENT);
    case Kind::Mailbox:
    case Kind::Inbox: {
      auto box = mailboxByIno(ino);
      if (!box) return fail(ENOENT);
      return mailboxStat(*box);
    }
    case Kind::Send:
    case Kind::Receive:
    case Kind::Status:
    case Kind::SendLines:
    case Kind::ReceiveLines:
    case Kind::SendFrames:
    case Kind::ReceiveFrames: {
      auto box = mailboxById(id);
      if (!box) return fail(ENOENT);
      const mode_t m = box->mode;
      mode_t mode = 0;
      off_t size = 0;
      const Kind kind = ino::kindOf(ino);
      if (kind == Kind::Send || kind == Kind::SendLines || kind == Kind::SendFrames) {
        // Sending needs write permission on the mailbox; O_RDWR (receipts) reads too.
        mode = (m & 0222) | ((m & 0222) << 1);
        // Sized as the biggest message it takes: a write within a FUSE file's size may run
        // in parallel with others (FOPEN_PARALLEL_DIRECT_WRITES), one past it takes the
        // inode lock alone, so many senders on one mailbox would queue in the kernel.
        size = static_cast<off_t>(std::min<uint64_t>(box->maxMsgSize, uint64_t{1} << 40));
      } else if (kind == Kind::Receive || kind == Kind::ReceiveLines || kind == Kind::ReceiveFrames) {
        mode = m & 0444;  // size 0: reading takes, so content sniffers must not read
      } else {
        mode = m & 0444;
        size = static_cast<off_t>(renderMailboxStatus(*box).size());
      }
      struct stat st = baseStat(ino, S_IFREG | mode, box->uid, box->gid);
      st.st_size = size;
      setTimes(st, box->atime, box->mtime, box->ctime);
      return st;
    }
    case Kind::Message: {
      const detail::Message* msg = messages_->find(id);
      if (!msg) return fail(ENOENT);
      return messageStat(*msg);
    }
    case Kind::IdLink: {
      auto box = mailboxById(id);
      if (!box) return fail(ENOENT);
      struct stat st = baseStat(ino, S_IFLNK | 0777, limits_.ownerUid, limits_.ownerGid);
      st.st_size = static_cast<off_t>(std::string_view("../mailboxes/").size() + box->name.size());
      setTimes(st, box->ctime, box->ctime, box->ctime);
      return st;
    }
    default:
      return fail(ENOENT);
  }
}

std::string Engine::renderMailboxStatus(const Mailbox& box) const {
  std::string bound;
  for (const auto& b : box.pair) {
    if (!bound.empty()) bound += ' ';
    bound += std::to_string(b.pid);
  }
  return fmt::format(
      "id: {}\nname: {}\nmessages: {}\nbytes: {}\ncapacity: {}\npolicy: {}\nbound: {}\nmax_msg_size: {}\n"
      "receivers_waiting: {}\nsenders_waiting: {}\nreceipts_waiting: {}\nsent: {}\nreceived: {}\nredelivered: {}\n",
      box.id, statusEscaped(box.name), box.remote ? box.remoteMessages : box.queue.size(),
      box.remote ? box.remoteBytes : box.queuedBytes,
      box.capacity == kUnlimited ? std::string("unlimited") : std::to_string(box.capacity),
      detail::policyName(box.policy), bound.empty() ? "-" : bound, box.maxMsgSize, box.receivers.size(),
      box.senders.size(), box.receipts.size(), box.sent, box.received, box.redelivered);
}

std::string Engine::renderRootStatus() const {
  const std::string maxBytes = limits_.maxBytes == kUnlimited ? "unlimited" : std::to_string(limits_.maxBytes);
  return fmt::format(
      "mailboxes: {}\nmessages: {}\nbytes: {}\nreceivers_waiting: {}\nsenders_waiting: {}\npipes: {}\npipe_bytes: {}\n"
      "shm_segments: {}\nsemaphores: {}\ninboxes: {}\ndiscarded: {}\ninbox_discarded: {}\nbytes_held: {}\n"
      "max_bytes: {}\nopen_files: {}\n",
      mailboxesById_.size(), queuedMessages_, queuedBytes_, receiversWaiting_, sendersWaiting_, pipes_.size(),
      pipeBytesMoved_, segments_.size(), semaphores_.size(), inboxesById_.size(), discarded_, inboxDiscarded_,
      bytesUsed_, maxBytes, handles_.size() - snapshotHandles_);
}

// Prometheus text exposition format (version 0.0.4): scrapeable with `cat`.
std::string Engine::renderMetrics() const {
  std::string out;
  auto metric = [&](std::string_view name, std::string_view type, std::string_view help, uint64_t value) {
    out += fmt::format("# HELP ipcfs_{0} {1}\n# TYPE ipcfs_{0} {2}\nipcfs_{0} {3}\n", name, help, type, value);
  };
  metric("messages_sent_total", "counter", "Messages that entered a mailbox.", messagesSent_);
  metric("messages_received_total", "counter", "Messages read to the end by a receiver.", messagesReceived_);
  metric("messages_redelivered_total", "counter", "Messages returned to the head of their queue half-read.",
         messagesRedelivered_);
  metric("messages_discarded_total", "counter", "Messages removed without being received.", discarded_);
  metric("messages_queued", "gauge", "Messages queued in all mailboxes.", queuedMessages_);
  metric("bytes_queued", "gauge", "Payload bytes queued in all mailboxes.", queuedBytes_);
  metric("bytes_held", "gauge", "Bytes held against max_bytes.", bytesUsed_);
  metric("pipe_bytes_total", "counter", "Bytes moved through duplex pipes.", pipeBytesMoved_);
  metric("receivers_waiting", "gauge", "Blocked reads (receives, semaphore waits, pipe reads).", receiversWaiting_);
  metric("senders_waiting", "gauge", "Blocked sends and pipe writes.", sendersWaiting_);
  out += "# HELP ipcfs_objects Objects by kind.\n# TYPE ipcfs_objects gauge\n";
  out += fmt::format("ipcfs_objects{{kind=\"mailbox\"}} {}\n", mailboxesById_.size());
  out += fmt::format("ipcfs_objects{{kind=\"inbox\"}} {}\n", inboxesById_.size());
  out += fmt::format("ipcfs_objects{{kind=\"pipe\"}} {}\n", pipes_.size());
  out += fmt::format("ipcfs_objects{{kind=\"shm_segment\"}} {}\n", segments_.size());
  out += fmt::format("ipcfs_objects{{kind=\"semaphore\"}} {}\n", semaphores_.size());
  out += "# HELP ipcfs_errors_total Errors returned to callers, by errno.\n# TYPE ipcfs_errors_total counter\n";
  for (size_t e = 1; e < errors_.size(); ++e) {
    const uint64_t n = errors_[e].load(std::memory_order_relaxed);
    if (n == 0) continue;
    const char* name = strerrorname_np(static_cast<int>(e));
    out += fmt::format("ipcfs_errors_total{{errno=\"{}\"}} {}\n", name ? name : std::to_string(e), n);
  }
  return out;
}

std::string Engine::rootStatus() {
  reapExited();
  std::lock_guard lock(mutex_);
  return renderRootStatus();
}

}  // namespace ipcfs
