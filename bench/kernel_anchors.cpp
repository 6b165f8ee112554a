// Kernel anchors: POSIX message queues (one-way and ping-pong), pipe and socketpair
// throughput, /dev/shm mmap memcpy and POSIX process-shared semaphores, each between two
// processes released together.
#include <fcntl.h>
#include <mqueue.h>
#include <semaphore.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <vector>

#include "bench.hpp"

namespace bench {
namespace {

constexpr char kStop = 'S';
constexpr char kData = 'm';

mqd_t openQueue(const std::string& name, long msgSize) {
  mq_attr attr{};
  attr.mq_maxmsg = 10;  // the default limit (/proc/sys/fs/mqueue/msg_max) for every user
  attr.mq_msgsize = msgSize;
  mqd_t q = ::mq_open(name.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600, &attr);
  if (q == static_cast<mqd_t>(-1)) fail("mq_open " + name);
  ::mq_unlink(name.c_str());  // the children inherit the descriptor
  return q;
}

std::string queueName(const char* tag) {
  return "/ipcfs-bench-" + std::to_string(::getpid()) + "-" + tag;
}

void mqSend(mqd_t q, const char* buf, std::size_t n) {
  while (::mq_send(q, buf, n, 0) != 0) {
    if (errno != EINTR) fail("mq_send");
  }
}

ssize_t mqReceive(mqd_t q, char* buf, std::size_t n) {
  for (;;) {
    ssize_t r = ::mq_receive(q, buf, n, nullptr);
    if (r >= 0) return r;
    if (errno != EINTR) fail("mq_receive");
  }
}

// The last message of a run; the receiver may have stopped at its own deadline already,
// so the sender waits at most a second for room.
void mqSendStop(mqd_t q, std::size_t n) {
  std::vector<char> buf(n, kStop);
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += 1;
  ::mq_timedsend(q, buf.data(), n, 0, &ts);
}

Value mqOneWay(const Config& cfg, std::size_t size) {
  mqd_t q = openQueue(queueName("oneway"), static_cast<long>(size));
  std::vector<Role> roles;
  roles.push_back({[&](int, const StartFn& start) -> long long {
                     std::vector<char> buf(size, kData);
                     auto deadline = start();
                     for (long long i = 0;; ++i) {
                       if ((i & 31) == 0 && Clock::now() >= deadline) break;
                       mqSend(q, buf.data(), size);
                     }
                     mqSendStop(q, size);
                     return 0;
                   },
                   false});
  roles.push_back({[&](int, const StartFn& start) -> long long {
                     std::vector<char> buf(size);
                     start();  // the queue holds 10 messages: the stop follows the deadline at once
                     long long n = 0;
                     for (;;) {
                       mqReceive(q, buf.data(), size);
                       if (buf[0] == kStop) break;
                       ++n;
                     }
                     return n;
                   },
                   true});
  Value v = runTeam(roles, cfg.seconds, 10);
  ::mq_close(q);
  return v;
}

Value mqPingPong(const Config& cfg, std::size_t size) {
  mqd_t ping = openQueue(queueName("ping"), static_cast<long>(size));
  mqd_t pong = openQueue(queueName("pong"), static_cast<long>(size));
  std::vector<Role> roles;
  roles.push_back({[&](int, const StartFn& start) -> long long {
                     std::vector<char> buf(size, kData);
                     auto deadline = start();
                     long long n = 0;
                     while (Clock::now() < deadline) {
                       buf[0] = kData;
                       mqSend(ping, buf.data(), size);
                       mqReceive(pong, buf.data(), size);
                       ++n;
                     }
                     mqSendStop(ping, size);
                     return n;
                   },
                   true});
  roles.push_back({[&](int, const StartFn& start) -> long long {
                     std::vector<char> buf(size);
                     start();
                     for (;;) {
                       mqReceive(ping, buf.data(), size);
                       if (buf[0] == kStop) break;
                       mqSend(pong, buf.data(), size);
                     }
                     return 0;
                   },
                   false});
  Value v = runTeam(roles, cfg.seconds, 10);
  ::mq_close(ping);
  ::mq_close(pong);
  return v;
}

// Bytes/s through a stream (pipe or socketpair) with 64 KiB writes, in GB/s.
Value streamGBs(const Config& cfg, bool socket) {
  int fds[2];
  if (socket) {
    if (::socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0) fail("socketpair");
  } else {
    if (::pipe(fds) != 0) fail("pipe");
  }
  constexpr std::size_t kChunk = 64 * 1024;
  std::vector<Role> roles;
  roles.push_back({[&](int, const StartFn& start) -> long long {
                     ::close(fds[0]);
                     std::vector<char> buf(kChunk, kData);
                     auto deadline = start();
                     while (Clock::now() < deadline) writeAll(fds[1], buf.data(), kChunk, "stream write");
                     ::close(fds[1]);
                     return 0;
                   },
                   false});
  roles.push_back({[&](int, const StartFn& start) -> long long {
                     ::close(fds[1]);
                     std::vector<char> buf(kChunk);
                     start();
                     long long bytes = 0;
                     for (;;) {
                       ssize_t r = ::read(fds[0], buf.data(), kChunk);
                       if (r < 0 && errno == EINTR) continue;
                       if (r < 0) fail("stream read");
                       if (r == 0) break;
                       bytes += r;
                     }
                     return bytes;
                   },
                   true});
  Value v = runTeam(roles, cfg.seconds, 10, [&] {
    ::close(fds[0]);
    ::close(fds[1]);
  });
  if (v) *v /= 1e9;
  return v;
}

struct SemPair {
  sem_t a, b;
  std::atomic<int> stop;
};

void semWait(sem_t* s) {
  while (::sem_wait(s) != 0) {
    if (errno != EINTR) fail("sem_wait");
  }
}

// Ping-pong: one process posts a and waits on b, the other waits on a and posts b.
// Each round trip is two post+wait pairs.
Value posixSemPairs(const Config& cfg) {
  auto* s = static_cast<SemPair*>(sharedAlloc(sizeof(SemPair)));
  if (::sem_init(&s->a, 1, 0) != 0 || ::sem_init(&s->b, 1, 0) != 0) fail("sem_init");
  std::vector<Role> roles;
  roles.push_back({[&](int, const StartFn& start) -> long long {
                     auto deadline = start();
                     long long n = 0;
                     while (Clock::now() < deadline) {
                       ::sem_post(&s->a);
                       semWait(&s->b);
                       ++n;
                     }
                     s->stop.store(1);
                     ::sem_post(&s->a);
                     return 2 * n;
                   },
                   true});
  roles.push_back({[&](int, const StartFn& start) -> long long {
                     start();
                     for (;;) {
                       semWait(&s->a);
                       if (s->stop.load()) break;
                       ::sem_post(&s->b);
                     }
                     return 0;
                   },
                   false});
  Value v = runTeam(roles, cfg.seconds, 10);
  ::sem_destroy(&s->a);
  ::sem_destroy(&s->b);
  sharedFree(s, sizeof(SemPair));
  return v;
}

template <class F>
Value guarded(const Config& cfg, const char* what, F&& f) {
  try {
    return medianOf(what, cfg.repeats, f);
  } catch (const std::exception& e) {
    progress("%s: %s", what, e.what());
    return std::nullopt;
  }
}

}  // namespace

KernelAnchors measureKernel(const Config& cfg) {
  KernelAnchors k;
  progress("kernel anchors: POSIX mq, pipe, socketpair, /dev/shm, POSIX semaphores");
  k.mqOneWay64 = guarded(cfg, "mq one-way 64 B", [&] { return mqOneWay(cfg, 64); });
  k.mqOneWay4k = guarded(cfg, "mq one-way 4 KiB", [&] { return mqOneWay(cfg, 4096); });
  k.mqPingPong64 = guarded(cfg, "mq ping-pong 64 B", [&] { return mqPingPong(cfg, 64); });
  k.mqPingPong4k = guarded(cfg, "mq ping-pong 4 KiB", [&] { return mqPingPong(cfg, 4096); });
  k.pipeGBs = guarded(cfg, "pipe", [&] { return streamGBs(cfg, false); });
  k.socketpairGBs = guarded(cfg, "socketpair", [&] { return streamGBs(cfg, true); });
  try {
    k.devShm = memcpyIntoMapping("/dev/shm/ipcfs-bench-" + std::to_string(::getpid()), cfg.memBytes,
                                 cfg.quick ? 2 : 4);
  } catch (const std::exception& e) {
    progress("/dev/shm memcpy: %s", e.what());
  }
  k.semPairs = guarded(cfg, "POSIX semaphores", [&] { return posixSemPairs(cfg); });
  return k;
}

}  // namespace bench
