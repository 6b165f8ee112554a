// ipcfs_durable_bench [--quick] IPCFS_BINARY WORKDIR
//
// Durable mode (issue 9) in one run, on the disk holding WORKDIR:
//  - 64 B messages sent and received through one mailbox, one message per call (a sender
//    keeps .send open and sends each message with write + close of a dup of its
//    descriptor, which delivers it like any close; a receiver reads .receive, then the
//    read returning 0), with 1 and 8 concurrent senders (each with a receiver), on an
//    in-memory ipcfs and on a durable one
//    (--state-dir), and SQLite doing the same inserts and deletes itself (WAL,
//    synchronous=FULL); each durable figure with its ratio to the other two;
//  - the restart time of a state directory holding 1,000,000 queued messages: after kill -9
//    (the journal replayed) and after a clean stop (the snapshot read), and the clean stop.
// The daemons are started here (foreground, auto_unmount) and stopped before it exits.
// --quick is a smoke run of seconds with tiny counts (its figures mean nothing).
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "bench.hpp"

namespace bench {

Value sqliteQueue(const std::string& dir, int writers, int readers, double seconds);  // sqlite_peer.cpp

namespace {

constexpr std::size_t kMsg = 64;
constexpr char kData = 'm';
constexpr char kStop = 'S';

// Not fsync: the kernel holds the inode's lock through a FUSE fsync, so concurrent senders
// on one .send would wait for each other's disk syncs instead of sharing them. A close()
// (FLUSH) holds no lock while the daemon answers.
Value sendReceive(const std::string& mount, int pairs, double seconds) {
  static int serial = 0;
  const std::string box = mount + "/mailboxes/bench-" + std::to_string(::getpid()) + "-" + std::to_string(++serial);
  if (::mkdir(box.c_str(), 0700) != 0) fail("mkdir " + box);
  std::vector<Role> roles;
  for (int i = 0; i < pairs; ++i) {
    roles.push_back({[&](int, const StartFn& start) -> long long {
                       const int fd = ::open((box + "/.send").c_str(), O_WRONLY);
                       if (fd < 0) fail("open .send");
                       char buf[kMsg];
                       std::memset(buf, kData, sizeof buf);
                       auto send = [&](char first) {
                         buf[0] = first;
                         writeAll(fd, buf, sizeof buf, "write .send");
                         if (::close(::dup(fd)) != 0) fail("close (send)");
                       };
                       auto deadline = start();
                       for (long long n = 0;; ++n) {
                         if ((n & 15) == 0 && Clock::now() >= deadline) break;
                         send(kData);
                       }
                       send(kStop);
                       ::close(fd);
                       return 0;
                     },
                     false});
    roles.push_back({[&](int, const StartFn& start) -> long long {
                       const int fd = ::open((box + "/.receive").c_str(), O_RDONLY);
                       if (fd < 0) fail("open .receive");
                       char buf[kMsg + 1];
                       auto deadline = start();
                       long long n = 0;
                       for (;;) {
                         ssize_t r = ::read(fd, buf, sizeof buf);
                         if (r <= 0) fail("read .receive");
                         const char first = buf[0];
                         while ((r = ::read(fd, buf, sizeof buf)) > 0) {
                         }
                         if (r < 0) fail("read .receive (end of message)");
                         if (first == kStop) break;
                         ++n;
                         if ((n & 15) == 0 && Clock::now() >= deadline) break;
                       }
                       ::close(fd);
                       return n;
                     },
                     true});
  }
  Value v = runTeam(roles, seconds, 30);
  // What is left (senders run on to their stop message) is drained, then the mailbox goes.
  const int fd = ::open((box + "/.receive-frames").c_str(), O_RDONLY | O_NONBLOCK);
  std::vector<char> buf(1 << 20);
  while (fd >= 0 && ::read(fd, buf.data(), buf.size()) > 0) {
  }
  if (fd >= 0) ::close(fd);
  if (::rmdir(box.c_str()) != 0) progress("rmdir %s: %s", box.c_str(), std::strerror(errno));
  return v;
}

// One ipcfs daemon of the bench's own.
class Daemon {
 public:
  Daemon(std::string binary, std::string mount, std::string stateDir, std::string extra = {})
      : binary_(std::move(binary)), mount_(std::move(mount)), stateDir_(std::move(stateDir)), extra_(std::move(extra)) {}
  ~Daemon() {
    if (pid_ > 0) stop();
  }

  // Starts it and returns the seconds until the mount was ready.
  double start() {
    std::filesystem::create_directories(mount_);
    std::string opts = "auto_unmount";
    if (!stateDir_.empty()) opts += ",state_dir=" + stateDir_;
    if (!extra_.empty()) opts += "," + extra_;
    const auto t0 = Clock::now();
    pid_ = forkChild(
        [&]() -> int {
          const int null = ::open("/dev/null", O_WRONLY);
          ::dup2(null, 1);
          ::execl(binary_.c_str(), binary_.c_str(), "-f", "-o", opts.c_str(), "--log-level", "error",
                  mount_.c_str(), static_cast<char*>(nullptr));
          return 127;
        },
        0);
    while (!isMounted(mount_)) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = 0;
        failPlain("ipcfs exited before mounting " + mount_);
      }
      if (secondsSince(t0) > 600) failPlain("ipcfs did not mount " + mount_ + " within 600 s");
      ::usleep(1000);  // polling the mount table: the start itself is what is timed
    }
    return secondsSince(t0);
  }

  // SIGTERM (a final snapshot in durable mode); returns the seconds until it exited.
  double stop() {
    const auto t0 = Clock::now();
    if (!terminate(pid_, 600)) progress("ipcfs %d did not stop cleanly", static_cast<int>(pid_));
    pid_ = 0;
    return secondsSince(t0);
  }

  // A crash: SIGKILL, then the dead mount is unmounted.
  void kill9() {
    ::kill(pid_, SIGKILL);
    reap(pid_, 30);
    pid_ = 0;
    const std::string cmd = "fusermount3 -u -z '" + mount_ + "' 2>/dev/null";
    // (auto_unmount's helper may win the race: only a mount still there is a problem)
    if (isMounted(mount_) && std::system(cmd.c_str()) != 0 && isMounted(mount_))
      progress("could not unmount %s", mount_.c_str());
  }

  const std::string& mount() const { return mount_; }

 private:
  std::string binary_, mount_, stateDir_, extra_;
  pid_t pid_ = 0;
};

Value oneMessagePerCall(const std::string& mount, int pairs, const Config& cfg, const char* tag) {
  return medianOf(tag, cfg.repeats, [&] { return sendReceive(mount, pairs, cfg.seconds); });
}

// The disk's own pace: median latency of a 100-byte append + fdatasync in `dir`.
Value syncLatencyMs(const std::string& dir, int count) {
  const std::string path = dir + "/sync-probe";
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0600);
  if (fd < 0) fail("open " + path);
  std::vector<double> ms;
  const char buf[100] = {};
  for (int i = 0; i < count; ++i) {
    const auto t0 = Clock::now();
    writeAll(fd, buf, sizeof buf, "write sync probe");
    if (::fdatasync(fd) != 0) fail("fdatasync");
    ms.push_back(secondsSince(t0) * 1000);
  }
  ::close(fd);
  ::unlink(path.c_str());
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

struct Figures {
  Value syncMs;
  Value memory[2], durable[2], sqlite[2];  // 1 and 8 senders
  Value restartAfterKill, restartAfterStop, cleanStop, fillSeconds;
  double stateMiB = 0;
  long queued = 0;
};

double dirMiB(const std::string& dir) {
  std::uintmax_t bytes = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir))
    if (e.is_regular_file()) bytes += e.file_size();
  return static_cast<double>(bytes) / (1 << 20);
}

// Queues `count` 64 B messages into a new mailbox, 963 frames per write.
void fill(const std::string& mount, long count) {
  const std::string box = mount + "/mailboxes/queued";
  if (::mkdir(box.c_str(), 0700) != 0) fail("mkdir " + box);
  const int fd = ::open((box + "/.send-frames").c_str(), O_WRONLY);
  if (fd < 0) fail("open .send-frames");
  constexpr std::size_t kPerCall = 963;  // 65,484 B per write
  std::string buf;
  for (long sent = 0; sent < count;) {
    buf.clear();
    for (std::size_t i = 0; i < kPerCall && sent < count; ++i, ++sent) {
      const char len[4] = {64, 0, 0, 0};
      buf.append(len, 4);
      buf.append(64, 'q');
    }
    writeAll(fd, buf.data(), buf.size(), "write .send-frames");
  }
  ::close(fd);
}

long queuedIn(const std::string& mount) {
  const std::string text = readFile(mount + "/mailboxes/queued/.status");
  const auto at = text.find("messages: ");
  return at == std::string::npos ? -1 : std::atol(text.c_str() + at + 10);
}

std::string number(Value v, const char* fmt = "%.0f") {
  if (!v) return "n/a";
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, *v);
  return buf;
}

std::string ratio(Value a, Value b) {
  if (!a || !b || *b == 0) return "n/a";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g", *a / *b);
  return buf;
}

}  // namespace

}  // namespace bench

int main(int argc, char** argv) {
  using namespace bench;
  Config cfg;
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) cfg.quick = true;
    else args.emplace_back(argv[i]);
  }
  if (args.size() != 2) {
    std::fprintf(stderr, "usage: ipcfs_durable_bench [--quick] IPCFS_BINARY WORKDIR\n");
    return 2;
  }
  const std::string binary = args[0], work = args[1];
  if (cfg.quick) {
    cfg.seconds = 0.3;
    cfg.repeats = 1;
  } else {
    cfg.seconds = 2.0;
    cfg.repeats = 3;
  }
  ::signal(SIGPIPE, SIG_IGN);
  Figures f;
  f.queued = cfg.quick ? 20000 : 1000000;
  const int pairs[2] = {1, 8};
  try {
    f.syncMs = syncLatencyMs(work, cfg.quick ? 20 : 200);
    {
      Daemon memory(binary, work + "/mnt-memory", "");
      memory.start();
      Daemon durable(binary, work + "/mnt-durable", work + "/state-bench");
      durable.start();
      for (int k = 0; k < 2; ++k) {
        progress("%d sender(s): in memory", pairs[k]);
        f.memory[k] = oneMessagePerCall(memory.mount(), pairs[k], cfg, k ? "memory 8+8" : "memory 1+1");
        progress("%d sender(s): durable", pairs[k]);
        f.durable[k] = oneMessagePerCall(durable.mount(), pairs[k], cfg, k ? "durable 8+8" : "durable 1+1");
        progress("%d sender(s): SQLite", pairs[k]);
        f.sqlite[k] = medianOf(k ? "sqlite 8+8" : "sqlite 1+1", cfg.repeats,
                               [&] { return sqliteQueue(work, pairs[k], pairs[k], cfg.seconds); });
      }
    }
    // Restart with many queued messages. The journal limit is raised so that the kill -9
    // restart replays every message from the journal (the slower case); the clean stop
    // then writes them all as a snapshot.
    const std::string state = work + "/state-restart";
    {
      Daemon d(binary, work + "/mnt-restart", state, "journal_size=4G");
      d.start();
      progress("queueing %ld messages", f.queued);
      const auto t0 = Clock::now();
      fill(d.mount(), f.queued);
      f.fillSeconds = secondsSince(t0);
      d.kill9();
      f.restartAfterKill = d.start();
      if (queuedIn(d.mount()) != f.queued) failPlain("restart after kill -9 lost messages");
      f.cleanStop = d.stop();
      f.stateMiB = dirMiB(state);
      f.restartAfterStop = d.start();
      if (queuedIn(d.mount()) != f.queued) failPlain("restart after a clean stop lost messages");
      d.stop();
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ipcfs_durable_bench: %s\n", e.what());
    return 1;
  }

  std::printf("| figure | value | unit | ratio to in-memory ipcfs | ratio to SQLite |\n");
  std::printf("|---|--:|---|--:|--:|\n");
  std::printf("| the disk: 100 B append + fdatasync, median | %s | ms | | |\n", number(f.syncMs, "%.2f").c_str());
  for (int k = 0; k < 2; ++k) {
    std::printf("| in-memory ipcfs, 64 B send+receive, %d sender(s) + %d receiver(s) | %s | msg/s | | |\n", pairs[k],
                pairs[k], number(f.memory[k]).c_str());
    std::printf("| SQLite WAL synchronous=FULL, INSERT + DELETE RETURNING, %d + %d | %s | msg/s | | |\n", pairs[k],
                pairs[k], number(f.sqlite[k]).c_str());
    std::printf("| durable ipcfs (--state-dir), 64 B send+receive, %d + %d | %s | msg/s | %s | %s |\n", pairs[k],
                pairs[k], number(f.durable[k]).c_str(), ratio(f.durable[k], f.memory[k]).c_str(),
                ratio(f.durable[k], f.sqlite[k]).c_str());
  }
  std::printf("| queueing %ld messages through .send-frames, durable | %s | s | | |\n", f.queued,
              number(f.fillSeconds, "%.2f").c_str());
  std::printf("| restart with %ld queued, after kill -9 (journal replay) | %s | s | | |\n", f.queued,
              number(f.restartAfterKill, "%.2f").c_str());
  std::printf("| clean stop with %ld queued (writing the snapshot) | %s | s | | |\n", f.queued,
              number(f.cleanStop, "%.2f").c_str());
  std::printf("| restart with %ld queued, after a clean stop (snapshot) | %s | s | | |\n", f.queued,
              number(f.restartAfterStop, "%.2f").c_str());
  std::printf("| state directory with %ld queued | %.1f | MiB | | |\n", f.queued, f.stateMiB);
  return 0;
}
