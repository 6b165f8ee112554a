// The ipcfs figures of issue 8, measured through a live mount with plain file I/O.
//
// "One message per call" uses .send-lines (one 65-byte line per write()) and
// .receive-lines (a 65-byte read() takes exactly one 64-byte message) when the mailbox
// has them; otherwise .send (write + fsync per message) and .receive (read, then the
// read that returns 0 at the end of the message).
#include <fcntl.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench.hpp"

namespace bench {
namespace {

constexpr std::size_t kMsg = 64;
constexpr char kData = 'm';
constexpr char kStop = 'S';
constexpr std::size_t kFrame = 4 + kMsg;
constexpr std::size_t kFramesPerCall = (64 * 1024) / kFrame;  // 963 frames = 65,484 B

std::string tagged(const char* tag) {
  static int serial = 0;
  return "bench-" + std::to_string(::getpid()) + "-" + tag + "-" + std::to_string(++serial);
}

int openOrFail(const std::string& path, int flags) {
  int fd;
  do {
    fd = ::open(path.c_str(), flags);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) fail("open " + path);
  return fd;
}

ssize_t readRetry(int fd, void* buf, std::size_t n) {
  ssize_t r;
  do {
    r = ::read(fd, buf, n);
  } while (r < 0 && errno == EINTR);
  return r;
}

long long statusField(const std::string& statusPath, const std::string& key) {
  std::istringstream in(readFile(statusPath));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ":", 0) == 0) return std::atoll(line.c_str() + key.size() + 1);
  }
  return -1;
}

// A mailbox made for one figure; drained (not timed) and removed afterwards.
class Mailbox {
 public:
  Mailbox(const Config& cfg, const char* tag, bool quick) : Mailbox(cfg.mount, tag, quick) {}
  Mailbox(const std::string& mount, const char* tag, bool quick) : name_(tagged(tag)), quick_(quick) {
    path_ = mount + "/mailboxes/" + name_;
    if (::mkdir(path_.c_str(), 0700) != 0) fail("mkdir " + path_);
  }
  ~Mailbox() {
    drain();
    if (::rmdir(path_.c_str()) != 0) {
      progress("rmdir %s: %s (left behind)", path_.c_str(), std::strerror(errno));
    }
  }
  Mailbox(const Mailbox&) = delete;
  Mailbox& operator=(const Mailbox&) = delete;

  std::string node(const char* name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }
  // The same mailbox through another mount on the same backend, once that mount shows it.
  std::string on(const std::string& mount) const {
    std::string dir = mount + "/mailboxes/" + name_;
    if (dir == path_) return dir;
    auto deadline = Clock::now() + std::chrono::seconds(10);
    while (!exists(dir)) {
      if (Clock::now() > deadline) failPlain(dir + " did not appear within 10 s");
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return dir;
  }
  bool has(const char* name) const { return exists(node(name)); }

  void drain() noexcept {
    auto deadline = Clock::now() + std::chrono::seconds(quick_ ? 20 : 90);
    const bool frames = has(".receive-frames");
    int fd = ::open(node(frames ? ".receive-frames" : ".receive").c_str(), O_RDONLY | O_NONBLOCK);
    if (fd < 0) return;
    std::vector<char> buf(1 << 20);
    for (long long i = 0;; ++i) {
      ssize_t r = readRetry(fd, buf.data(), buf.size());
      if (r < 0) break;  // EAGAIN: empty
      if ((i & 1023) == 0 && Clock::now() > deadline) {
        progress("draining %s: giving up after the deadline", path_.c_str());
        break;
      }
    }
    ::close(fd);
  }

 private:
  std::string name_, path_;
  bool quick_;
};

// ------------------------------------------------------------------ one message per call
struct OneSender {
  int fd = -1;
  bool lines = false;
  char buf[kMsg + 1];

  OneSender(const std::string& dir, bool useLines) : lines(useLines) {
    fd = openOrFail(dir + (lines ? "/.send-lines" : "/.send"), O_WRONLY);
    std::memset(buf, kData, sizeof buf);
    buf[kMsg] = '\n';
  }
  ~OneSender() { ::close(fd); }
  void send(char first) {
    buf[0] = first;
    if (lines) {
      writeAll(fd, buf, kMsg + 1, "write .send-lines");
    } else {
      writeAll(fd, buf, kMsg, "write .send");
      if (::fsync(fd) != 0) fail("fsync .send");
    }
  }
};

struct OneReceiver {
  int fd = -1;
  bool lines = false;
  char buf[kMsg + 1];

  OneReceiver(const std::string& dir, bool useLines) : lines(useLines) {
    fd = openOrFail(dir + (lines ? "/.receive-lines" : "/.receive"), O_RDONLY);
  }
  ~OneReceiver() { ::close(fd); }
  // Returns the message's first byte.
  char receive() {
    if (lines) {
      ssize_t r = readRetry(fd, buf, kMsg + 1);
      if (r != static_cast<ssize_t>(kMsg + 1)) fail("read .receive-lines (" + std::to_string(r) + ")");
      return buf[0];
    }
    ssize_t r = readRetry(fd, buf, kMsg + 1);
    if (r <= 0) fail("read .receive");
    char first = buf[0];
    while ((r = readRetry(fd, buf, kMsg + 1)) > 0) {
    }
    if (r < 0) fail("read .receive (end of message)");
    return first;
  }
};

}  // namespace

Value ipcfsOneByOne(const Config& cfg, const Route& route, bool lines, int senders, int receivers) {
  Mailbox mb(route.from, senders == 1 ? "one" : "many", cfg.quick);
  const std::string from = mb.path(), to = mb.on(route.to);
  std::vector<Role> roles;
  for (int i = 0; i < senders; ++i) {
    roles.push_back({[&](int, const StartFn& start) -> long long {
                       OneSender s(from, lines);
                       auto deadline = start();
                       for (long long n = 0;; ++n) {
                         if ((n & 15) == 0 && Clock::now() >= deadline) break;
                         s.send(kData);
                       }
                       s.send(kStop);
                       return 0;
                     },
                     false});
  }
  for (int i = 0; i < receivers; ++i) {
    roles.push_back({[&](int, const StartFn& start) -> long long {
                       OneReceiver r(to, lines);
                       auto deadline = start();
                       long long n = 0;
                       for (;;) {
                         if (r.receive() == kStop) break;
                         ++n;
                         if ((n & 15) == 0 && Clock::now() >= deadline) break;
                       }
                       return n;
                     },
                     true});
  }
  return runTeam(roles, cfg.seconds, 30);
}

Value ipcfsPingPong(const Config& cfg, const Route& route, bool lines) {
  Mailbox ping(route.from, "ping", cfg.quick), pong(route.from, "pong", cfg.quick);
  const std::string pingTo = ping.on(route.to), pongTo = pong.on(route.to);
  std::vector<Role> roles;
  roles.push_back({[&](int, const StartFn& start) -> long long {
                     OneSender s(ping.path(), lines);
                     OneReceiver r(pong.path(), lines);
                     auto deadline = start();
                     long long n = 0;
                     while (Clock::now() < deadline) {
                       s.send(kData);
                       if (r.receive() != kData) failPlain("ping-pong: unexpected message");
                       ++n;
                     }
                     s.send(kStop);
                     return n;
                   },
                   true});
  roles.push_back({[&](int, const StartFn& start) -> long long {
                     OneReceiver r(pingTo, lines);
                     OneSender s(pongTo, lines);
                     start();
                     while (r.receive() == kData) s.send(kData);
                     return 0;
                   },
                   false});
  return runTeam(roles, cfg.seconds, 30);
}

namespace {

// ------------------------------------------------------------------ frames
void putFrame(char* p, char first) {
  const uint32_t len = kMsg;
  p[0] = static_cast<char>(len & 0xff);
  p[1] = static_cast<char>((len >> 8) & 0xff);
  p[2] = static_cast<char>((len >> 16) & 0xff);
  p[3] = static_cast<char>((len >> 24) & 0xff);
  std::memset(p + 4, kData, kMsg);
  p[4] = first;
}

std::vector<char> frameBatch(std::size_t frames) {
  std::vector<char> buf(frames * kFrame);
  for (std::size_t i = 0; i < frames; ++i) putFrame(buf.data() + i * kFrame, kData);
  return buf;
}

}  // namespace

Value ipcfsFrames(const Config& cfg, const Route& route) {
  Mailbox mb(route.from, "frames", cfg.quick);
  if (!mb.has(".send-frames") || !mb.has(".receive-frames")) return std::nullopt;
  const std::string to = mb.on(route.to);
  std::vector<Role> roles;
  roles.push_back({[&](int, const StartFn& start) -> long long {
                     int fd = openOrFail(mb.node(".send-frames"), O_WRONLY);
                     std::vector<char> batch = frameBatch(kFramesPerCall);
                     auto deadline = start();
                     while (Clock::now() < deadline) writeAll(fd, batch.data(), batch.size(), "write .send-frames");
                     char stop[kFrame];
                     putFrame(stop, kStop);
                     writeAll(fd, stop, kFrame, "write .send-frames");
                     ::close(fd);
                     return 0;
                   },
                   false});
  roles.push_back({[&](int, const StartFn& start) -> long long {
                     int fd = openOrFail(to + "/.receive-frames", O_RDONLY);
                     std::vector<char> buf(64 * 1024);
                     auto deadline = start();
                     long long n = 0;
                     bool stop = false;
                     while (!stop && Clock::now() < deadline) {
                       ssize_t r = readRetry(fd, buf.data(), buf.size());
                       if (r <= 0) fail("read .receive-frames");
                       std::size_t off = 0, got = static_cast<std::size_t>(r);
                       while (off + 4 <= got) {
                         const auto* u = reinterpret_cast<const unsigned char*>(buf.data() + off);
                         std::size_t len = u[0] | (u[1] << 8) | (u[2] << 16) | (static_cast<std::size_t>(u[3]) << 24);
                         if (off + 4 + len > got) failPlain(".receive-frames returned a partial frame");
                         if (len > 0 && buf[off + 4] == kStop) stop = true; else ++n;
                         off += 4 + len;
                       }
                       if (off != got) failPlain(".receive-frames returned a partial frame header");
                     }
                     ::close(fd);
                     return n;
                   },
                   true});
  return runTeam(roles, cfg.seconds, 30);
}

namespace {

// ------------------------------------------------------------------ echo-style sends
Value echoSends(const Config& cfg) {
  Mailbox mb(cfg, "echo", cfg.quick);
  const std::string send = mb.node(".send");
  char msg[kMsg];
  std::memset(msg, kData, sizeof msg);
  auto t = Clock::now();
  auto deadline = t + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(cfg.seconds));
  long long n = 0;
  for (;; ++n) {
    if ((n & 15) == 0 && Clock::now() >= deadline) break;
    int fd = openOrFail(send, O_WRONLY);
    writeAll(fd, msg, sizeof msg, "write .send");
    if (::close(fd) != 0) fail("close .send");
  }
  return dbl(n) / secondsSince(t);
}

// ------------------------------------------------------------------ sem/
struct SemStop {
  std::atomic<int> stop;
};

void semPost(int fd) {
  if (::write(fd, "1", 1) != 1) fail("post (write) on sem/");
}

void semWait(int fd) {
  char buf[16];
  ssize_t n;
  do {
    n = ::pread(fd, buf, sizeof buf, 0);
  } while (n < 0 && errno == EINTR);
  if (n <= 0) fail("wait (pread) on sem/");
}

// Ping-pong between two processes through sem/A and sem/B: two post+wait pairs per
// round trip (as the POSIX anchor).
Value semPairs(const Config& cfg) {
  const std::string a = cfg.mount + "/sem/" + tagged("a"), b = cfg.mount + "/sem/" + tagged("b");
  for (const auto& path : {a, b}) {
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0) fail("create " + path);
    ::close(fd);
  }
  auto* s = static_cast<SemStop*>(sharedAlloc(sizeof(SemStop)));
  std::vector<Role> roles;
  roles.push_back({[&](int, const StartFn& start) -> long long {
                     int fa = openOrFail(a, O_RDWR), fb = openOrFail(b, O_RDWR);
                     auto deadline = start();
                     long long n = 0;
                     while (Clock::now() < deadline) {
                       semPost(fa);
                       semWait(fb);
                       ++n;
                     }
                     s->stop.store(1);
                     semPost(fa);
                     return 2 * n;
                   },
                   true});
  roles.push_back({[&](int, const StartFn& start) -> long long {
                     int fa = openOrFail(a, O_RDWR), fb = openOrFail(b, O_RDWR);
                     start();
                     for (;;) {
                       semWait(fa);
                       if (s->stop.load()) break;
                       semPost(fb);
                     }
                     return 0;
                   },
                   false});
  Value v = runTeam(roles, cfg.seconds, 30);
  sharedFree(s, sizeof(SemStop));
  ::unlink(a.c_str());
  ::unlink(b.c_str());
  return v;
}

// ------------------------------------------------------------------ blocked receivers
struct BlockShared {
  std::atomic<long> opened, failed, got;
};

struct BlockCtx {
  const char* path;
  BlockShared* sh;
};

void* blockedReader(void* arg) {
  auto* ctx = static_cast<BlockCtx*>(arg);
  int fd;
  do {
    fd = ::open(ctx->path, O_RDONLY);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    ctx->sh->failed.fetch_add(1);
    return nullptr;
  }
  ctx->sh->opened.fetch_add(1);
  char buf[256];
  if (readRetry(fd, buf, sizeof buf) > 0) ctx->sh->got.fetch_add(1);
  ::close(fd);
  return nullptr;
}

int blockedChild(const std::string& path, long threads, BlockShared* sh) {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < static_cast<rlim_t>(threads + 64)) {
    rl.rlim_cur = std::min(rl.rlim_max, static_cast<rlim_t>(threads + 64));
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
  BlockCtx ctx{path.c_str(), sh};
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 64 * 1024);
  std::vector<pthread_t> tids;
  for (long i = 0; i < threads; ++i) {
    pthread_t t;
    if (pthread_create(&t, &attr, blockedReader, &ctx) != 0) {
      sh->failed.fetch_add(threads - i);
      break;
    }
    tids.push_back(t);
  }
  pthread_attr_destroy(&attr);
  for (pthread_t t : tids) pthread_join(t, nullptr);
  return 0;
}

bool waitFor(double timeoutS, const std::function<bool()>& cond) {
  auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeoutS));
  while (!cond()) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

void blockedReceivers(const Config& cfg, IpcfsFigures& f) {
  Mailbox mb(cfg, "blocked", cfg.quick);
  const long total = cfg.blockedReceivers;
  const long procs = total >= 1000 ? 20 : 2;
  auto* sh = static_cast<BlockShared*>(sharedAlloc(sizeof(BlockShared)));
  const std::string receive = mb.node(".receive");
  std::vector<pid_t> pids;
  long assigned = 0;
  for (long p = 0; p < procs; ++p) {
    long threads = total / procs + (p < total % procs ? 1 : 0);
    assigned += threads;
    pids.push_back(forkChild([&, threads] { return blockedChild(receive, threads, sh); }, 600));
  }
  const std::string status = mb.node(".status");
  bool allOpen = waitFor(cfg.quick ? 30 : 120, [&] { return sh->opened.load() + sh->failed.load() >= assigned; });
  const long opened = sh->opened.load();
  f.blockedReceivers = opened;
  if (!allOpen || sh->failed.load() > 0) {
    f.notes.push_back("blocked receivers: " + std::to_string(opened) + " of " + std::to_string(total) +
                      " opened .receive (" + std::to_string(sh->failed.load()) + " failed)");
  }
  bool allWaiting = waitFor(cfg.quick ? 20 : 60, [&] { return statusField(status, "receivers_waiting") >= opened; });
  if (!allWaiting) {
    f.notes.push_back("blocked receivers: .status shows receivers_waiting " +
                      std::to_string(statusField(status, "receivers_waiting")) + " of " + std::to_string(opened));
  }
  if (cfg.daemonPid > 0) {
    long threads = threadCount(cfg.daemonPid);
    if (threads > 0) f.blockedDaemonThreads = dbl(threads);
  }
  f.blockedLsMountMs = medianCommandMs({"ls", "--", cfg.mount}, 5, 10);
  if (cfg.daemonPid > 0) {  // a second sample after the listings
    long threads = threadCount(cfg.daemonPid);
    if (threads > 0) f.blockedDaemonThreads = std::max(f.blockedDaemonThreads.value_or(0), dbl(threads));
  }

  // Release them: one message each.
  try {
    if (mb.has(".send-lines")) {
      int fd = openOrFail(mb.node(".send-lines"), O_WRONLY);
      std::string chunk;
      for (long i = 0; i < opened;) {
        chunk.clear();
        for (long k = 0; k < 1000 && i < opened; ++k, ++i) chunk += "go\n";
        writeAll(fd, chunk.data(), chunk.size(), "write .send-lines");
      }
      ::close(fd);
    } else {
      int fd = openOrFail(mb.node(".send"), O_WRONLY);
      for (long i = 0; i < opened; ++i) {
        writeAll(fd, "go", 2, "write .send");
        if (::fsync(fd) != 0) fail("fsync .send");
      }
      ::close(fd);
    }
  } catch (const std::exception& e) {
    f.notes.push_back(std::string("blocked receivers: release: ") + e.what());
  }
  bool ok = true;
  for (pid_t pid : pids) ok = reap(pid, cfg.quick ? 30 : 120) && ok;
  if (!ok || sh->got.load() != opened) {
    f.notes.push_back("blocked receivers: " + std::to_string(sh->got.load()) + " of " + std::to_string(opened) +
                      " got their message");
  }
  sharedFree(sh, sizeof(BlockShared));
}

// ------------------------------------------------------------------ queued messages
void queuedMessages(const Config& cfg, IpcfsFigures& f) {
  Mailbox mb(cfg, "queue", cfg.quick);
  const char* unlimited = "unlimited";
  ::setxattr(mb.path().c_str(), "user.ipc.capacity", unlimited, std::strlen(unlimited), 0);
  const long long rss0 = cfg.daemonPid > 0 ? vmRssKiB(cfg.daemonPid) : -1;
  long long sent = 0;
  const long long want = cfg.queuedMessages;
  if (mb.has(".send-frames")) {
    f.queueMode = ".send-frames, 64 KiB writes";
    int fd = openOrFail(mb.node(".send-frames"), O_WRONLY);
    std::vector<char> batch = frameBatch(kFramesPerCall);
    while (sent < want) {
      long long k = std::min<long long>(static_cast<long long>(kFramesPerCall), want - sent);
      writeAll(fd, batch.data(), static_cast<std::size_t>(k) * kFrame, "write .send-frames");
      sent += k;
    }
    ::close(fd);
  } else if (mb.has(".send-lines")) {
    f.queueMode = ".send-lines, 64 KiB writes";
    int fd = openOrFail(mb.node(".send-lines"), O_WRONLY);
    const std::size_t perCall = (64 * 1024) / (kMsg + 1);
    std::string line(kMsg, kData);
    line += '\n';
    std::string batch;
    for (std::size_t i = 0; i < perCall; ++i) batch += line;
    while (sent < want) {
      long long k = std::min<long long>(static_cast<long long>(perCall), want - sent);
      writeAll(fd, batch.data(), static_cast<std::size_t>(k) * (kMsg + 1), "write .send-lines");
      sent += k;
    }
    ::close(fd);
  } else {
    // No batch nodes: as many single sends as fit in a bounded time.
    const double budget = cfg.quick ? 0.3 : 20.0;
    char mode[64];
    std::snprintf(mode, sizeof mode, ".send write+fsync (no batch nodes), %.1f s budget", budget);
    f.queueMode = mode;
    int fd = openOrFail(mb.node(".send"), O_WRONLY);
    char msg[kMsg];
    std::memset(msg, kData, sizeof msg);
    auto t = Clock::now();
    while (sent < want && secondsSince(t) < budget) {
      writeAll(fd, msg, kMsg, "write .send");
      if (::fsync(fd) != 0) fail("fsync .send");
      ++sent;
    }
    ::close(fd);
  }
  f.queued = static_cast<long>(sent);
  const long long queued = statusField(mb.node(".status"), "messages");
  if (queued != sent) {
    f.notes.push_back("queued messages: .status shows " + std::to_string(queued) + " of " + std::to_string(sent));
  }
  const long long rss1 = cfg.daemonPid > 0 ? vmRssKiB(cfg.daemonPid) : -1;
  if (rss0 >= 0 && rss1 >= 0 && sent > 0) f.rssPerMessage = dbl((rss1 - rss0) * 1024) / dbl(sent);
  Value ms = timeCommandMs({"ls", "--", mb.path()}, cfg.quick ? 20 : 60);
  if (ms) f.lsQueuedMailboxS = *ms / 1000.0;
  else f.notes.push_back("queued messages: ls of the mailbox failed or took longer than its deadline");
}

// ------------------------------------------------------------------ duplex pipe
// 64 KiB writes on one end of a duplex pipe in pipes/, reads on the other (the name is
// unlinked at once: an anonymous pipe).
Value duplexPipeGBs(const Config& cfg) {
  const std::string path = cfg.mount + "/pipes/" + tagged("duplex");
  const int writer = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
  if (writer < 0) fail("create " + path);
  const int reader = openOrFail(path, O_RDWR);
  ::unlink(path.c_str());
  constexpr std::size_t kChunk = 64 * 1024;
  std::vector<Role> roles;
  roles.push_back({[&](int, const StartFn& start) -> long long {
                     ::close(reader);
                     std::vector<char> buf(kChunk, 'p');
                     auto deadline = start();
                     while (Clock::now() < deadline) writeAll(writer, buf.data(), kChunk, "duplex pipe write");
                     ::close(writer);
                     return 0;
                   },
                   false});
  roles.push_back({[&](int, const StartFn& start) -> long long {
                     ::close(writer);
                     std::vector<char> buf(kChunk);
                     start();
                     long long bytes = 0;
                     for (;;) {
                       ssize_t r = ::read(reader, buf.data(), kChunk);
                       if (r < 0 && errno == EINTR) continue;
                       if (r < 0) fail("duplex pipe read");
                       if (r == 0) break;  // the writer's end closed: end of file
                       bytes += r;
                     }
                     return bytes;
                   },
                   true});
  Value v = runTeam(roles, cfg.seconds, 10, [&] {
    ::close(writer);
    ::close(reader);
  });
  if (v) *v /= 1e9;
  return v;
}

template <class F>
void guarded(IpcfsFigures& f, const char* what, F&& fn) {
  progress("ipcfs: %s", what);
  try {
    fn();
  } catch (const std::exception& e) {
    progress("ipcfs: %s: %s", what, e.what());
    f.notes.push_back(std::string(what) + ": " + e.what());
  }
}

}  // namespace

IpcfsFigures measureIpcfs(const Config& cfg) {
  IpcfsFigures f;
  if (!exists(cfg.mount + "/mailboxes") || !exists(cfg.mount + "/sem") || !exists(cfg.mount + "/shm")) {
    f.notes.push_back(cfg.mount + " is not an ipcfs mount (no mailboxes/, sem/, shm/)");
    return f;
  }
  bool lines = false;
  {
    Mailbox probe(cfg, "probe", cfg.quick);
    lines = probe.has(".send-lines") && probe.has(".receive-lines");
  }
  f.oneMode = lines ? ".send-lines/.receive-lines, one 65 B line per call"
                    : ".send write+fsync, .receive read+read";

  // First, while the daemon is fresh: RSS growth per queued message.
  guarded(f, "queued messages", [&] { queuedMessages(cfg, f); });
  const Route here{cfg.mount, cfg.mount};
  guarded(f, "1 sender + 1 receiver", [&] { f.oneByOne = medianOf("ipcfs 1+1", cfg.repeats, [&] { return ipcfsOneByOne(cfg, here, lines, 1, 1); }); });
  guarded(f, "frames", [&] { f.frames = medianOf("ipcfs frames", cfg.repeats, [&] { return ipcfsFrames(cfg, here); }); });
  guarded(f, "ping-pong", [&] { f.pingPong = medianOf("ipcfs ping-pong", cfg.repeats, [&] { return ipcfsPingPong(cfg, here, lines); }); });
  guarded(f, "echo-style sends", [&] { f.echoSends = medianOf("ipcfs echo-style", cfg.repeats, [&] { return echoSends(cfg); }); });
  guarded(f, "4 senders + 4 receivers", [&] { f.fourByFour = medianOf("ipcfs 4+4", cfg.repeats, [&] { return ipcfsOneByOne(cfg, here, lines, 4, 4); }); });
  if (exists(cfg.mount + "/pipes"))
    guarded(f, "duplex pipe", [&] { f.duplexPipeGBs = medianOf("ipcfs duplex pipe", cfg.repeats, [&] { return duplexPipeGBs(cfg); }); });
  guarded(f, "semaphores", [&] { f.semPairs = medianOf("ipcfs sem/", cfg.repeats, [&] { return semPairs(cfg); }); });
  guarded(f, "shm/ memcpy", [&] {
    f.shm = memcpyIntoMapping(cfg.mount + "/shm/" + tagged("mem"), cfg.memBytes, cfg.quick ? 2 : 4);
  });
  guarded(f, "blocked receivers", [&] { blockedReceivers(cfg, f); });
  return f;
}

}  // namespace bench
