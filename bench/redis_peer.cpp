// Redis as the peer a user would otherwise pick: redis-server (no persistence) started by
// the bench on a free loopback port as a child process, hiredis clients with one
// connection per process. LPUSH + BRPOP messages/s (one sender, one receiver, one
// command per message) and ping-pong round trips/s over two lists. measureRedisAt does the
// same against a server that is already running (ipcfs_redis_bench: the one ipcfs uses).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "bench.hpp"

#if IPCFS_BENCH_HAVE_HIREDIS
#include <hiredis/hiredis.h>
#endif

namespace bench {

#if !IPCFS_BENCH_HAVE_HIREDIS

RedisPeer measureRedisAt(const Config&, int) {
  RedisPeer r;
  r.note = "built without hiredis (libhiredis-dev)";
  progress("Redis: %s", r.note.c_str());
  return r;
}

RedisPeer measureRedis(const Config& cfg) { return measureRedisAt(cfg, 0); }

#else

namespace {

int freeLoopbackPort() {
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  if (s < 0) fail("socket");
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  if (::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    ::close(s);
    fail("bind a loopback port");
  }
  ::close(s);
  return ntohs(a.sin_port);
}

struct Conn {
  redisContext* c = nullptr;
  explicit Conn(int port) {
    timeval tv{2, 0};
    c = ::redisConnectWithTimeout("127.0.0.1", port, tv);
    if (!c || c->err) {
      std::string why = c ? c->errstr : "out of memory";
      if (c) ::redisFree(c);
      c = nullptr;
      failPlain("connect to redis-server: " + why);
    }
  }
  ~Conn() {
    if (c) ::redisFree(c);
  }
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;

  // Runs a command; returns the reply (caller frees) or throws.
  redisReply* run(const char* fmt, const char* key, const char* val, std::size_t len) {
    void* r = val ? ::redisCommand(c, fmt, key, val, len) : ::redisCommand(c, fmt, key);
    if (!r) failPlain(std::string("redis: ") + c->errstr);
    auto* reply = static_cast<redisReply*>(r);
    if (reply->type == REDIS_REPLY_ERROR) {
      std::string why = reply->str ? reply->str : "error";
      ::freeReplyObject(reply);
      failPlain("redis: " + why);
    }
    return reply;
  }
  void push(const char* key, const char* val, std::size_t len) {
    ::freeReplyObject(run("LPUSH %s %b", key, val, len));
  }
  // BRPOP with a 2 s timeout; returns the first byte of the value ('\0' on timeout).
  char pop(const char* key) {
    redisReply* r = run("BRPOP %s 2", key, nullptr, 0);
    char first = 0;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 && r->element[1]->len > 0) {
      first = r->element[1]->str[0];
    }
    ::freeReplyObject(r);
    return first;
  }
};

bool pingServer(int port) {
  try {
    Conn c(port);
    redisReply* r = static_cast<redisReply*>(::redisCommand(c.c, "PING"));
    bool ok = r && r->type == REDIS_REPLY_STATUS;
    if (r) ::freeReplyObject(r);
    return ok;
  } catch (const Error&) {
    return false;
  }
}

pid_t startServer(int port) {
  return forkChild(
      [&]() -> int {
        int devnull = ::open("/dev/null", O_RDWR);
        if (devnull >= 0) {
          ::dup2(devnull, 0);
          ::dup2(devnull, 1);
          ::dup2(devnull, 2);
        }
        std::string p = std::to_string(port);
        ::execlp("redis-server", "redis-server", "--port", p.c_str(), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", "",
                 static_cast<char*>(nullptr));
        return 127;
      },
      0);
}

constexpr char kData = 'm';
constexpr char kStop = 'S';

// A list of its own for each run: a receiver stops at its deadline and leaves the sender's
// last messages behind, which the next run would otherwise count (or stop at).
Value pushPop(const Config& cfg, int port) {
  static int run = 0;
  const std::string key = "ipcfs-bench-q-" + std::to_string(::getpid()) + "-" + std::to_string(++run);
  std::vector<Role> roles;
  roles.push_back({[&](int, const StartFn& start) -> long long {
                     Conn c(port);
                     char msg[64];
                     std::memset(msg, kData, sizeof msg);
                     auto deadline = start();
                     for (long long i = 0;; ++i) {
                       if ((i & 15) == 0 && Clock::now() >= deadline) break;
                       c.push(key.c_str(), msg, sizeof msg);
                     }
                     msg[0] = kStop;
                     c.push(key.c_str(), msg, sizeof msg);
                     return 0;
                   },
                   false});
  roles.push_back({[&](int, const StartFn& start) -> long long {
                     Conn c(port);
                     auto deadline = start();
                     long long n = 0;
                     for (;;) {
                       char first = c.pop(key.c_str());
                       if (first == kStop || first == 0) break;
                       ++n;
                       if ((n & 15) == 0 && Clock::now() >= deadline) break;
                     }
                     return n;
                   },
                   true});
  Value rate = runTeam(roles, cfg.seconds, 10);
  Conn c(port);
  ::freeReplyObject(c.run("DEL %s", key.c_str(), nullptr, 0));
  return rate;
}

Value pingPong(const Config& cfg, int port) {
  const std::string ping = "ipcfs-bench-ping", pong = "ipcfs-bench-pong";
  std::vector<Role> roles;
  roles.push_back({[&](int, const StartFn& start) -> long long {
                     Conn c(port);
                     char msg[64];
                     std::memset(msg, kData, sizeof msg);
                     auto deadline = start();
                     long long n = 0;
                     while (Clock::now() < deadline) {
                       c.push(ping.c_str(), msg, sizeof msg);
                       if (c.pop(pong.c_str()) != kData) failPlain("ping-pong lost its partner");
                       ++n;
                     }
                     msg[0] = kStop;
                     c.push(ping.c_str(), msg, sizeof msg);
                     return n;
                   },
                   true});
  roles.push_back({[&](int, const StartFn& start) -> long long {
                     Conn c(port);
                     char msg[64];
                     std::memset(msg, kData, sizeof msg);
                     start();
                     for (;;) {
                       char first = c.pop(ping.c_str());
                       if (first != kData) break;
                       c.push(pong.c_str(), msg, sizeof msg);
                     }
                     return 0;
                   },
                   false});
  return runTeam(roles, cfg.seconds, 10);
}

}  // namespace

RedisPeer measureRedis(const Config& cfg) {
  RedisPeer r;
  progress("Redis: redis-server on loopback, hiredis LPUSH/BRPOP and ping-pong");
  pid_t server = 0;
  int port = 0;
  for (int attempt = 0; attempt < 3 && !server; ++attempt) {
    port = freeLoopbackPort();
    pid_t pid = startServer(port);
    auto deadline = Clock::now() + std::chrono::seconds(10);
    bool up = false;
    while (Clock::now() < deadline) {
      if (pingServer(port)) {
        up = true;
        break;
      }
      int status = 0;
      if (::waitpid(pid, &status, WNOHANG) == pid) {  // exited: missing, or the port was taken
        pid = 0;
        if (WIFEXITED(status) && WEXITSTATUS(status) == 127) attempt = 3;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (up) {
      server = pid;
    } else if (pid) {
      terminate(pid, 5);
    }
  }
  if (!server) {
    r.note = "redis-server not available (install redis-server)";
    progress("Redis: %s", r.note.c_str());
    return r;
  }
  r = measureRedisAt(cfg, port);
  if (!terminate(server, 10)) progress("redis-server (pid %d) did not exit cleanly", static_cast<int>(server));
  return r;
}

RedisPeer measureRedisAt(const Config& cfg, int port) {
  RedisPeer r;
  try {
    r.pushPopPerS = medianOf("Redis LPUSH+BRPOP", cfg.repeats, [&] { return pushPop(cfg, port); });
    r.pingPongPerS = medianOf("Redis ping-pong", cfg.repeats, [&] { return pingPong(cfg, port); });
  } catch (const std::exception& e) {
    r.note = e.what();
    progress("Redis: %s", e.what());
  }
  return r;
}

#endif

}  // namespace bench
