// The engine as a state machine: the input is decoded into a sequence of calls on one Engine
// with small limits (mkdir, rmdir, rename, opens of every control node, writes of messages,
// lines and frames, flush, release, blocking and non-blocking reads, interrupts, drop-in
// files, unlink, setxattr, truncate, poll, peeks and `.status` reads), issued the way the
// kernel issues them (one request at a time per open file, release only when none is in
// flight). After every call, what the public API shows must hang together:
// - the root `.status` counters are plausible and agree with the listings and with the sum
//   of the mailboxes' `.status` (messages, bytes, waiting receivers and senders);
// - every listed entry resolves by lookup to the inode it was listed with, and its size;
// - bytes_held covers the queued bytes and stays within max_bytes;
// - open_files counts the open files, and the completions still owed are the waits counted;
// - completions run at most once, reads return at most what was asked, batch reads whole
//   lines or frames.
// At the end shutdown() completes every parked call exactly once (ESHUTDOWN); releasing
// every file then leaves only queued bytes held, and emptying the mailboxes leaves none.
#include <fuzzer/FuzzedDataProvider.h>

#include <fcntl.h>
#include <linux/fs.h>  // RENAME_NOREPLACE, RENAME_EXCHANGE
#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fuzz_support.hpp"
#include "ipcfs/engine.hpp"
#include "ipcfs/inode.hpp"

using namespace ipcfs;
using namespace ipcfs::fuzz;

namespace {

constexpr pid_t kPids[] = {100, 101, 102};
constexpr std::string_view kBoxNames[] = {"a", "b", "c"};
constexpr std::string_view kMessageNames[] = {"x", "y", "0000000001", "0000000002"};
constexpr int kMaxSteps = 200;

enum class Node { Send, SendLines, SendFrames, Receive, ReceiveLines, ReceiveFrames, DropIn, Peek, Status };
constexpr std::string_view kControlNames[] = {".send", ".send-lines", ".send-frames", ".receive",
                                              ".receive-lines", ".receive-frames"};

bool isSender(Node n) { return n == Node::Send || n == Node::SendLines || n == Node::SendFrames; }
bool isReceiver(Node n) { return n == Node::Receive || n == Node::ReceiveLines || n == Node::ReceiveFrames; }

struct OpenFile {
  uint64_t fh = 0;
  Node node{};
  bool readable = false;  // opened O_RDONLY or O_RDWR
  Caller who;
  off_t offset = 0;  // drop-ins, peeks and `.status`: the file position
  // The request in flight on this file (a ledger entry) and its waiter, if it parked.
  std::optional<size_t> busy;
  std::optional<WaiterId> waiter;
};

// A read to check once it has completed.
struct ReadCheck {
  size_t entry;
  Node node;
  size_t size;
};

struct Entry {
  std::string name;
  uint64_t ino;
  off_t size;
};

class Harness {
 public:
  explicit Harness(FuzzedDataProvider& in)
      : in_(in), limits_(pickLimits(in)), endByShutdown_(in.ConsumeBool()), engine_(limits_, everyoneLives()) {}

  void run() {
    for (int step = 0; step < kMaxSteps && in_.remaining_bytes() > 0; ++step) {
      this->step();
      settleReads();
      checkInvariants();
    }
    finish();
  }

 private:
  static Limits pickLimits(FuzzedDataProvider& in) {
    Limits l;
    constexpr uint64_t kMaxBytes[] = {kUnlimited, 64, 300, 4096};
    constexpr uint64_t kMaxMsg[] = {kDefaultMaxMsgSize, 8, 40, 200};
    l.maxBytes = kMaxBytes[in.ConsumeIntegralInRange<size_t>(0, 3)];
    l.defaultMaxMsgSize = kMaxMsg[in.ConsumeIntegralInRange<size_t>(0, 3)];
    return l;
  }

  Caller caller() {
    const pid_t pid = kPids[in_.ConsumeIntegralInRange<size_t>(0, std::size(kPids) - 1)];
    return Caller{.pid = pid, .uid = 1000, .gid = 1000};
  }

  std::string boxName() {
    if (in_.ConsumeIntegralInRange<int>(0, 15) == 0) {
      return in_.ConsumeRandomLengthString(8);  // any bytes: newlines too
    }
    return std::string(kBoxNames[in_.ConsumeIntegralInRange<size_t>(0, std::size(kBoxNames) - 1)]);
  }

  // A mailbox's inode: a live one by name, or one seen before (perhaps removed since, as
  // the kernel's cache may still hold it).
  std::optional<uint64_t> boxIno() {
    if (!seenBoxes_.empty() && in_.ConsumeIntegralInRange<int>(0, 7) == 0)
      return seenBoxes_[in_.ConsumeIntegralInRange<size_t>(0, seenBoxes_.size() - 1)];
    auto st = engine_.lookup(ino::kMailboxes, boxName());
    if (!st) return std::nullopt;
    return st->st_ino;
  }

  std::vector<Entry> list(uint64_t dir) {
    std::vector<Entry> entries;
    auto r = engine_.readdir(dir, 0, [&](const DirEntry& e) {
      if (e.name != "." && e.name != "..") entries.push_back({std::string(e.name), e.attr.st_ino, e.attr.st_size});
      return true;
    });
    FUZZ_CHECK(r || errnoOf(r) == ENOENT, "readdir failed: errno " + std::to_string(errnoOf(r)));
    return entries;
  }

  // A message name: one of the mailbox's (listed) or one of the pool.
  std::string messageName(uint64_t box) {
    if (in_.ConsumeBool()) {
      auto entries = list(box);
      if (!entries.empty()) return entries[in_.ConsumeIntegralInRange<size_t>(0, entries.size() - 1)].name;
    }
    return std::string(kMessageNames[in_.ConsumeIntegralInRange<size_t>(0, std::size(kMessageNames) - 1)]);
  }

  OpenFile* pickFile(bool idleOnly = true) {
    if (files_.empty()) return nullptr;
    OpenFile& f = files_[in_.ConsumeIntegralInRange<size_t>(0, files_.size() - 1)];
    if (idleOnly && inFlight(f)) return nullptr;
    return &f;
  }

  void addFile(uint64_t fh, Node node, bool readable, const Caller& who) {
    OpenFile f;
    f.fh = fh;
    f.node = node;
    f.readable = readable;
    f.who = who;
    files_.push_back(f);
  }

  // A request in flight on the file (or a second one, a flush during a read).
  bool inFlight(const OpenFile& f) const {
    if (f.busy && !ledger_.done(*f.busy)) return true;
    for (const OpenFile& s : shadows_)
      if (s.fh == f.fh && s.busy && !ledger_.done(*s.busy)) return true;
    return false;
  }
  bool readInFlight(const OpenFile& f) const { return f.busy && !ledger_.done(*f.busy) && ledger_[*f.busy].isRead; }

  void track(OpenFile& f, size_t entry, std::optional<WaiterId> parked) {
    if (ledger_.done(entry)) return;
    FUZZ_CHECK(parked.has_value(), "a call neither completed nor parked");
    f.busy = entry;
    f.waiter = parked;
  }

  std::string payload(size_t maxLen) { return in_.ConsumeRandomLengthString(maxLen); }

  // Lines, some incomplete, with the odd empty one.
  std::string lines() {
    std::string out;
    for (int n = in_.ConsumeIntegralInRange<int>(0, 4); n > 0; --n) {
      out += in_.ConsumeRandomLengthString(12);
      if (in_.ConsumeIntegralInRange<int>(0, 4) != 0) out += '\n';
    }
    return out;
  }

  // Frames: a 4-byte little-endian length and that many bytes, or a bogus length, or a
  // frame cut short.
  std::string frames() {
    std::string out;
    for (int n = in_.ConsumeIntegralInRange<int>(0, 3); n > 0; --n) {
      std::string body = in_.ConsumeRandomLengthString(24);
      uint32_t len = static_cast<uint32_t>(body.size());
      switch (in_.ConsumeIntegralInRange<int>(0, 7)) {
        case 0: len = in_.ConsumeIntegral<uint32_t>(); break;
        case 1: len += in_.ConsumeIntegralInRange<uint32_t>(1, 8); break;
        default: break;
      }
      const char le[4] = {static_cast<char>(len), static_cast<char>(len >> 8), static_cast<char>(len >> 16),
                          static_cast<char>(len >> 24)};
      out.append(le, 4);
      out += body;
    }
    if (in_.ConsumeIntegralInRange<int>(0, 7) == 0 && !out.empty())
      out.resize(in_.ConsumeIntegralInRange<size_t>(0, out.size() - 1));
    return out;
  }

  void step() {
    switch (in_.ConsumeIntegralInRange<int>(0, 19)) {
      case 0: {
        const std::string name = boxName();
        auto st = engine_.mkdir(ino::kMailboxes, name, 0755, caller());
        if (st) seenBoxes_.push_back(st->st_ino);
        break;
      }
      case 1:
        (void)engine_.rmdir(ino::kMailboxes, boxName());
        break;
      case 2: {
        const std::string from = boxName(), to = boxName();
        const unsigned flags = in_.PickValueInArray({0u, unsigned{RENAME_NOREPLACE}, unsigned{RENAME_EXCHANGE}});
        (void)engine_.rename(ino::kMailboxes, from, ino::kMailboxes, to, flags);
        break;
      }
      case 3:
      case 4:
        openControl();
        break;
      case 5:
      case 6:
        write();
        break;
      case 7:
        flush();
        break;
      case 8:
        release();
        break;
      case 9:
      case 10:
        read();
        break;
      case 11: {  // (arguments that consume input are taken in a fixed order)
        auto box = boxIno();
        if (!box) break;
        const std::string name = messageName(*box);
        (void)engine_.unlink(*box, name, caller());
        break;
      }
      case 12:
        setxattr();
        break;
      case 13:
        createDropIn();
        break;
      case 14: {  // mv of a message, within a mailbox or to another
        auto from = boxIno();
        auto to = boxIno();
        if (!from || !to) break;
        const std::string name = messageName(*from), newName = messageName(*to);
        (void)engine_.rename(*from, name, *to, newName, 0, caller());
        break;
      }
      case 15: {  // an interrupt (a signal) for the request in flight on a file
        OpenFile* f = pickFile(false);
        if (!f || !inFlight(*f) || !f->waiter) break;
        engine_.cancel(*f->waiter);
        FUZZ_CHECK(ledger_.done(*f->busy), "an interrupted call did not complete");
        break;
      }
      case 16:
        readStatus();
        break;
      case 17:
        peek();
        break;
      case 18:
        truncateOrChmod();
        break;
      default:
        poll();
        break;
    }
  }

  void openControl() {
    auto box = boxIno();
    if (!box) return;
    const auto which = in_.ConsumeIntegralInRange<size_t>(0, std::size(kControlNames) - 1);
    auto st = engine_.lookup(*box, kControlNames[which]);
    if (!st) return;
    const Node node = static_cast<Node>(which);
    int access = isSender(node) ? (in_.ConsumeBool() ? O_WRONLY : O_RDWR) : O_RDONLY;
    if (in_.ConsumeIntegralInRange<int>(0, 15) == 0) access = in_.PickValueInArray({O_RDONLY, O_WRONLY, O_RDWR});
    const int flags = access | (in_.ConsumeBool() ? O_NONBLOCK : 0);
    const Caller who = caller();
    auto opened = engine_.open(st->st_ino, flags, who);
    if (!opened) {
      const int err = errnoOf(opened);
      FUZZ_CHECK(err == EACCES || err == EBUSY || err == EPERM || err == ENOENT,
                 "open " + std::string(kControlNames[which]) + ": errno " + std::to_string(err));
      return;
    }
    FUZZ_CHECK(isSender(node) ? access != O_RDONLY : access == O_RDONLY, "open with the wrong access mode succeeded");
    addFile(opened->fh, node, access != O_WRONLY, who);
  }

  void createDropIn() {
    auto box = boxIno();
    if (!box) return;
    const std::string name = in_.ConsumeIntegralInRange<int>(0, 7) == 0 ? in_.ConsumeRandomLengthString(6)
                                                                         : messageName(*box);
    const int flags = O_WRONLY | O_CREAT | (in_.ConsumeBool() ? O_EXCL : 0) | (in_.ConsumeBool() ? O_NONBLOCK : 0);
    const Caller who = caller();
    auto made = engine_.create(*box, name, 0644, flags, who);
    if (!made) return;
    auto st = engine_.lookup(*box, name);
    FUZZ_CHECK(st && st->st_ino == made->first.st_ino, "a drop-in being written does not resolve: " + quoted(name));
    addFile(made->second.fh, Node::DropIn, false, who);
  }

  void write() {
    OpenFile* f = pickFile();
    if (!f || !(isSender(f->node) || f->node == Node::DropIn)) return;
    std::string data;
    switch (f->node) {
      case Node::SendLines: data = lines(); break;
      case Node::SendFrames: data = frames(); break;
      default: data = payload(48); break;
    }
    if (f->node == Node::DropIn && in_.ConsumeIntegralInRange<int>(0, 7) == 0)
      f->offset = in_.ConsumeIntegralInRange<off_t>(0, 64);  // a seek
    const size_t entry = ledger_.open();
    auto parked = engine_.write(f->fh, data, f->offset, in_.ConsumeBool(), f->who, ledger_.write(entry));
    track(*f, entry, parked);
    if (ledger_.done(entry) && ledger_[entry].err == 0) {
      const uint64_t n = std::stoull(ledger_[entry].data);
      FUZZ_CHECK(n <= data.size(), "a write of " + std::to_string(data.size()) + " bytes wrote " + ledger_[entry].data);
      if (f->node == Node::DropIn) f->offset += static_cast<off_t>(n);
    }
  }

  void flush() {
    OpenFile* f = pickFile(false);
    if (!f) return;
    // A close() may come while another thread's read waits on the same file; never two
    // writes or closes at once.
    std::erase_if(shadows_, [&](const OpenFile& s) { return ledger_.done(*s.busy); });
    const bool duringRead = readInFlight(*f);
    if (inFlight(*f) && !duringRead) return;
    const size_t entry = ledger_.open();
    auto parked = in_.ConsumeBool() ? engine_.flush(f->fh, ledger_.status(entry))
                                    : engine_.fsync(f->fh, ledger_.status(entry));
    if (ledger_.done(entry)) return;
    FUZZ_CHECK(parked.has_value(), "a flush neither completed nor parked");
    if (duringRead) {
      // The file now has two requests in flight: the flush goes on a shadow entry, which
      // no other call picks and which keeps the file from being released.
      OpenFile shadow = *f;
      shadow.busy = entry;
      shadow.waiter = parked;
      shadows_.push_back(shadow);
      return;
    }
    f->busy = entry;
    f->waiter = parked;
  }

  void release() {
    if (files_.empty()) return;
    const size_t i = in_.ConsumeIntegralInRange<size_t>(0, files_.size() - 1);
    const uint64_t fh = files_[i].fh;
    if (inFlight(files_[i])) return;
    if (in_.ConsumeBool()) {  // close(): FLUSH, then RELEASE (a rare RELEASE comes alone)
      const size_t entry = ledger_.open();
      auto parked = engine_.flush(fh, ledger_.status(entry));
      if (!ledger_.done(entry)) {
        files_[i].busy = entry;
        files_[i].waiter = parked;
        return;  // the close waits: RELEASE comes in a later step, once it returned
      }
    }
    engine_.release(fh);
    files_.erase(files_.begin() + static_cast<ptrdiff_t>(i));
    std::erase_if(shadows_, [&](const OpenFile& s) { return s.fh == fh; });
  }

  void read() {
    OpenFile* f = pickFile();
    if (!f || !f->readable) return;
    const size_t size = in_.ConsumeIntegralInRange<size_t>(1, in_.ConsumeBool() ? 8 : 300);
    const bool nonblock = in_.ConsumeBool();
    const size_t entry = ledger_.open(true);
    const bool positional = f->node == Node::Peek || f->node == Node::Status;
    auto parked = engine_.read(f->fh, size, positional ? f->offset : 0, nonblock, f->who.pid, ledger_.read(entry));
    track(*f, entry, parked);
    if (nonblock && isReceiver(f->node)) FUZZ_CHECK(ledger_.done(entry), "a non-blocking receive parked");
    if (positional && ledger_.done(entry)) f->offset += static_cast<off_t>(ledger_[entry].data.size());
    reads_.push_back({entry, f->node, size});
  }

  void setxattr() {
    auto box = boxIno();
    if (!box) return;
    static constexpr std::string_view kValues[] = {"0", "1", "2", "unlimited", "any", "exclusive", "pair", "5\n", "x"};
    const std::string_view attr =
        in_.PickValueInArray({"user.ipc.capacity", "user.ipc.policy", "user.ipc.max_msg_size"});
    // Small capacities and sizes: full mailboxes, blocked senders, refused messages.
    std::string value;
    if (in_.ConsumeBool()) {
      value = kValues[in_.ConsumeIntegralInRange<size_t>(0, std::size(kValues) - 1)];
    } else {
      const int most = in_.ConsumeBool() ? 4 : 64;
      value = std::to_string(in_.ConsumeIntegralInRange<int>(0, most));
    }
    (void)engine_.setxattr(*box, attr, value);
  }

  void truncateOrChmod() {
    auto box = boxIno();
    if (!box) return;
    auto st = engine_.lookup(*box, messageName(*box));
    if (!st) return;
    AttrChange change;
    if (in_.ConsumeBool())
      change.size = in_.ConsumeIntegralInRange<off_t>(0, 64);
    else
      change.mode = static_cast<mode_t>(in_.ConsumeIntegralInRange<int>(0, 0777));
    (void)engine_.setattr(st->st_ino, change);
  }

  void poll() {
    OpenFile* f = pickFile(false);
    if (!f) return;
    auto fired = std::make_shared<int>(0);
    auto r = engine_.poll(f->fh, [fired] {
      FUZZ_CHECK(*fired == 0, "a poll notification fired twice");
      ++*fired;
    });
    FUZZ_CHECK(r, "poll of an open file failed");
  }

  // A `.status` (a mailbox's or the root's) read through its file, with its size checked.
  void readStatus() {
    if (in_.ConsumeIntegralInRange<int>(0, 3) == 0) {
      checkMetrics();
      return;
    }
    std::optional<uint64_t> ino = ino::kRootStatus;
    if (in_.ConsumeBool()) {
      auto box = boxIno();
      if (!box) return;
      auto st = engine_.lookup(*box, ".status");
      if (!st) return;
      ino = st->st_ino;
    }
    auto text = readWhole(*ino);
    if (!text) return;
    parseStatus(*text);
    if (in_.ConsumeBool()) {  // also left open, to be read in pieces later
      const Caller who = caller();
      auto opened = engine_.open(*ino, O_RDONLY, who);
      if (opened) addFile(opened->fh, Node::Status, true, who);
    }
  }

  // `.metrics` (Prometheus text): comment lines and `name{labels} value` lines; its gauges
  // agree with the root `.status`.
  void checkMetrics() {
    auto text = readWhole(ino::kRootMetrics);
    FUZZ_CHECK(text, "open .metrics failed");
    const StatusFields root = parseStatus(engine_.rootStatus());
    std::map<std::string, std::string, std::less<>> values;
    size_t pos = 0;
    while (pos < text->size()) {
      const size_t end = text->find('\n', pos);
      FUZZ_CHECK(end != std::string::npos, ".metrics does not end a line");
      const std::string_view line = std::string_view(*text).substr(pos, end - pos);
      pos = end + 1;
      if (line.starts_with("# HELP ") || line.starts_with("# TYPE ")) continue;
      const size_t space = line.rfind(' ');
      FUZZ_CHECK(space != std::string_view::npos && line.starts_with("ipcfs_"), ".metrics line: " + quoted(line));
      values[std::string(line.substr(0, space))] = std::string(line.substr(space + 1));
    }
    for (auto [metric, key] : {std::pair{"ipcfs_messages_queued", "messages"}, std::pair{"ipcfs_bytes_queued", "bytes"},
                               std::pair{"ipcfs_bytes_held", "bytes_held"}}) {
      StatusFields one{{key, values[metric]}};
      FUZZ_CHECK(counter(one, key) == counter(root, key),
                 std::string(metric) + " " + values[metric] + ", .status " + key + " " + root.at(key));
    }
  }

  // Peeks at a message: its contents are its size.
  void peek() {
    auto box = boxIno();
    if (!box) return;
    auto st = engine_.lookup(*box, messageName(*box));
    if (!st || !S_ISREG(st->st_mode)) return;
    if (in_.ConsumeBool()) {
      const Caller who = caller();
      auto opened = engine_.open(st->st_ino, O_RDONLY, who);
      if (opened) addFile(opened->fh, Node::Peek, true, who);
      return;
    }
    auto text = readWhole(st->st_ino);
    if (!text) return;
    auto now = engine_.getattr(st->st_ino);
    if (now) FUZZ_CHECK(static_cast<size_t>(now->st_size) == text->size(), "a peek's contents are not its size");
  }

  // Opens `ino` read-only, reads it whole, checks its size against getattr; nullopt if it
  // cannot be opened (gone).
  std::optional<std::string> readWhole(uint64_t ino) {
    auto opened = engine_.open(ino, O_RDONLY, Caller{});
    if (!opened) return std::nullopt;
    auto st = engine_.getattr(ino);
    std::string text;
    for (;;) {
      std::optional<Result<Bytes>> got;
      std::string chunk;
      auto parked = engine_.read(opened->fh, 4096, static_cast<off_t>(text.size()), true, 0, [&](Result<Bytes> r) {
        if (r) chunk.assign(r->view);
        got.emplace(std::move(r));
      });
      FUZZ_CHECK(!parked && got && *got, "a read of a snapshot failed or parked");
      if (chunk.empty()) break;
      text += chunk;
    }
    engine_.release(opened->fh);
    FUZZ_CHECK(st && static_cast<size_t>(st->st_size) == text.size(),
               "getattr size " + std::to_string(st ? st->st_size : -1) + " but " + std::to_string(text.size()) +
                   " bytes read: " + quoted(text));
    return text;
  }

  // Checks reads that have completed: at most the size asked; batch reads whole units.
  void settleReads() {
    std::erase_if(reads_, [&](const ReadCheck& r) {
      if (!ledger_.done(r.entry)) return false;
      const auto& e = ledger_[r.entry];
      if (e.err != 0) return true;
      FUZZ_CHECK(e.data.size() <= r.size, "a read of " + std::to_string(r.size) + " returned " +
                                              std::to_string(e.data.size()) + " bytes");
      if (r.node == Node::ReceiveLines) {
        FUZZ_CHECK(e.data.empty() || e.data.back() == '\n', "a lines read ended mid-line: " + quoted(e.data));
      } else if (r.node == Node::ReceiveFrames) {
        size_t pos = 0;
        while (pos + 4 <= e.data.size()) {
          uint32_t len = 0;  // little-endian
          for (size_t i = 4; i-- > 0;) len = len << 8 | static_cast<unsigned char>(e.data[pos + i]);
          pos += 4 + len;
        }
        FUZZ_CHECK(pos == e.data.size(), "a frames read is not whole frames: " + quoted(e.data));
      }
      return true;
    });
  }

  StatusFields mailboxStatus(uint64_t box) {
    auto st = engine_.lookup(box, ".status");
    FUZZ_CHECK(st, "a listed mailbox has no .status");
    auto text = readWhole(st->st_ino);
    FUZZ_CHECK(text, "a listed mailbox's .status cannot be opened");
    return parseStatus(*text);
  }

  void checkInvariants() {
    const StatusFields root = parseStatus(engine_.rootStatus());
    const auto boxes = list(ino::kMailboxes);
    FUZZ_CHECK(counter(root, "mailboxes") == boxes.size(), "root mailboxes differs from the listing");
    FUZZ_CHECK(list(ino::kById).size() == boxes.size(), "by-id/ lists another number of mailboxes");
    uint64_t messages = 0, bytes = 0, receivers = 0, senders = 0, receipts = 0;
    for (const Entry& box : boxes) {
      auto st = engine_.lookup(ino::kMailboxes, box.name);
      FUZZ_CHECK(st && st->st_ino == box.ino, "a listed mailbox does not resolve: " + quoted(box.name));
      auto link = engine_.readlink(ino::make(ino::Kind::IdLink, ino::idOf(box.ino)));
      FUZZ_CHECK(link && *link == "../mailboxes/" + box.name, "its by-id link does not name it: " + quoted(box.name));
      const StatusFields status = mailboxStatus(box.ino);
      FUZZ_CHECK(status.at("name") == statusEscaped(box.name), "its .status names " + quoted(status.at("name")));
      uint64_t listedBytes = 0;
      const auto entries = list(box.ino);
      for (const Entry& e : entries) {
        auto m = engine_.lookup(box.ino, e.name);
        FUZZ_CHECK(m && m->st_ino == e.ino && m->st_size == e.size, "a listed message does not resolve as listed: " +
                                                                          quoted(box.name) + "/" + quoted(e.name));
        auto attr = engine_.getattr(e.ino);
        FUZZ_CHECK(attr && attr->st_size == e.size, "getattr of a listed message differs from its listing");
        listedBytes += static_cast<uint64_t>(e.size);
      }
      FUZZ_CHECK(counter(status, "messages") == entries.size(),
                 quoted(box.name) + " .status messages " + status.at("messages") + ", listed " +
                     std::to_string(entries.size()));
      FUZZ_CHECK(counter(status, "bytes") == listedBytes, quoted(box.name) + " .status bytes " + status.at("bytes") +
                                                              ", listed " + std::to_string(listedBytes));
      messages += entries.size();
      bytes += listedBytes;
      receivers += counter(status, "receivers_waiting");
      senders += counter(status, "senders_waiting");
      receipts += counter(status, "receipts_waiting");
    }
    FUZZ_CHECK(counter(root, "messages") == messages, "root messages " + root.at("messages") +
                                                          ", the mailboxes hold " + std::to_string(messages));
    FUZZ_CHECK(counter(root, "bytes") == bytes, "root bytes " + root.at("bytes") + ", the mailboxes hold " +
                                                    std::to_string(bytes));
    FUZZ_CHECK(counter(root, "receivers_waiting") == receivers,
               "root receivers_waiting " + root.at("receivers_waiting") + ", the mailboxes " +
                   std::to_string(receivers));
    FUZZ_CHECK(counter(root, "senders_waiting") == senders,
               "root senders_waiting " + root.at("senders_waiting") + ", the mailboxes " + std::to_string(senders));
    const uint64_t held = counter(root, "bytes_held");
    FUZZ_CHECK(held >= bytes, "bytes_held " + std::to_string(held) + " below the queued " + std::to_string(bytes));
    if (limits_.maxBytes != kUnlimited)
      FUZZ_CHECK(held <= limits_.maxBytes, "bytes_held " + std::to_string(held) + " above max_bytes");
    size_t counted = 0;
    for (const OpenFile& f : files_) counted += f.node != Node::Peek && f.node != Node::Status;
    FUZZ_CHECK(counter(root, "open_files") == counted,
               "open_files " + root.at("open_files") + ", " + std::to_string(counted) + " open");
    FUZZ_CHECK(ledger_.pending() == receivers + senders + receipts,
               std::to_string(ledger_.pending()) + " calls in flight, but the mailboxes count " +
                   std::to_string(receivers) + " receivers, " + std::to_string(senders) + " senders and " +
                   std::to_string(receipts) + " receipts waiting");
  }

  void finish() {
    if (endByShutdown_) {
      std::vector<size_t> owed;
      for (size_t i = 0; i < ledger_.size(); ++i)
        if (!ledger_.done(i)) owed.push_back(i);
      engine_.shutdown();
      FUZZ_CHECK(ledger_.pending() == 0, "shutdown left " + std::to_string(ledger_.pending()) + " calls in flight");
      for (size_t i : owed)
        FUZZ_CHECK(ledger_[i].err == ESHUTDOWN,
                   "shutdown completed a call with errno " + std::to_string(ledger_[i].err));
      settleReads();
      const StatusFields root = parseStatus(engine_.rootStatus());
      FUZZ_CHECK(counter(root, "receivers_waiting") == 0 && counter(root, "senders_waiting") == 0,
                 "waiters counted after shutdown");
      for (const OpenFile& f : files_) engine_.release(f.fh);
      FUZZ_CHECK(counter(parseStatus(engine_.rootStatus()), "open_files") == 0, "open files left after release");
      return;
    }
    // Every call in flight interrupted (its process killed), then every file closed.
    for (const auto* group : {&files_, &shadows_})
      for (const OpenFile& f : *group)
        if (f.busy && !ledger_.done(*f.busy)) {
          FUZZ_CHECK(f.waiter, "a call in flight without a waiter");
          engine_.cancel(*f.waiter);
          FUZZ_CHECK(ledger_.done(*f.busy), "an interrupted call did not complete");
        }
    FUZZ_CHECK(ledger_.pending() == 0, "calls in flight after interrupting them all");
    settleReads();
    for (const OpenFile& f : files_) engine_.release(f.fh);
    files_.clear();
    checkInvariants();
    StatusFields root = parseStatus(engine_.rootStatus());
    FUZZ_CHECK(counter(root, "bytes_held") == counter(root, "bytes"),
               "with every file closed, bytes_held " + root.at("bytes_held") + " but " + root.at("bytes") +
                   " bytes queued");
    // Emptied and removed, the mailboxes leave nothing behind.
    for (const Entry& box : list(ino::kMailboxes)) {
      for (const Entry& e : list(box.ino))
        FUZZ_CHECK(engine_.unlink(box.ino, e.name), "unlink of a listed message failed: " + quoted(e.name));
      auto r = engine_.rmdir(ino::kMailboxes, box.name);
      FUZZ_CHECK(r, "rmdir of an emptied mailbox failed: errno " + std::to_string(errnoOf(r)));
    }
    root = parseStatus(engine_.rootStatus());
    for (std::string_view key : {"mailboxes", "messages", "bytes", "bytes_held", "open_files"})
      FUZZ_CHECK(counter(root, key) == 0, std::string(key) + " is " + root.at(std::string(key)) + " with nothing left");
    engine_.shutdown();
  }

  FuzzedDataProvider& in_;
  const Limits limits_;
  // How the run ends: shutdown() with calls in flight, or every call interrupted and every
  // file closed (then the memory accounting must come back to what stays queued).
  const bool endByShutdown_;
  Engine engine_;
  Ledger ledger_;
  std::vector<OpenFile> files_;
  std::vector<OpenFile> shadows_;  // second requests in flight on a file (a flush during a read)
  std::vector<ReadCheck> reads_;
  std::vector<uint64_t> seenBoxes_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  Harness(in).run();
  return 0;
}
