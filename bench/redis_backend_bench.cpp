// ipcfs_redis_bench [--quick] MOUNT_A MOUNT_B REDIS_PORT
//
// The benchmark of issue 11: two ipcfs daemons on one Redis (each started with
// --backend redis://127.0.0.1:REDIS_PORT, mounted on MOUNT_A and MOUNT_B: two hosts as far
// as ipcfs can tell) against raw hiredis clients of the same redis-server, in one run:
//  - Redis LPUSH+BRPOP 64 B msg/s (one pusher and one popper connection, one command per
//    message) and ping-pong round trips/s over two lists;
//  - ipcfs 64 B msg/s sent through A and received through B, one message per call, each
//    side with one descriptor open throughout: .send (write + fsync per message) to
//    .receive (read to the end of each message), and .send-lines to .receive-lines (one
//    65 B line per write, one per read);
//  - ipcfs ping-pong between the two mounts (ping sent on A and received on B, pong back);
//  - ipcfs 64 B messages A -> B through .send-frames/.receive-frames in 64 KiB calls;
// and prints one table with each ipcfs figure's ratio to its Redis anchor and the issue's
// target. Progress goes to stderr, the table to stdout. --quick is a smoke run of a few
// seconds (its figures mean nothing). scripts/bench-redis.sh starts the server and both
// daemons and runs it.
#include <signal.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <exception>
#include <string>
#include <thread>
#include <vector>

#include "bench.hpp"
#include "bench_table.hpp"

namespace {

using bench::Value;

// Both mounts are ipcfs on the same backend: a mailbox made through A shows through B.
std::string sameBackend(const std::string& a, const std::string& b) {
  for (const auto& m : {a, b}) {
    if (!bench::exists(m + "/mailboxes")) return m + " is not an ipcfs mount (no mailboxes/)";
  }
  const std::string name = "/mailboxes/bench-probe-" + std::to_string(::getpid());
  if (::mkdir((a + name).c_str(), 0700) != 0) return "mkdir " + a + name + ": " + std::strerror(errno);
  std::string why;
  auto deadline = bench::Clock::now() + std::chrono::seconds(10);
  while (!bench::exists(b + name)) {
    if (bench::Clock::now() > deadline) {
      why = "a mailbox made through " + a + " did not show through " + b + " within 10 s: not the same backend?";
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ::rmdir((a + name).c_str());
  return why;
}

}  // namespace

int main(int argc, char** argv) {
  bench::Config cfg;
  const bench::CommandLine cl = bench::parseCommandLine(argc, argv, cfg, "[--quick] MOUNT_A MOUNT_B REDIS_PORT", {3, 3});
  if (cl.exitCode >= 0) return cl.exitCode;
  const std::string mountA = bench::withoutTrailingSlash(cl.positional[0]);
  const std::string mountB = bench::withoutTrailingSlash(cl.positional[1]);
  const int port = std::atoi(cl.positional[2].c_str());
  if (port <= 0 || port > 65535) {
    std::fprintf(stderr, "ipcfs_redis_bench: bad port %s\n", cl.positional[2].c_str());
    return 2;
  }
  cfg.mount = mountA;
  ::signal(SIGPIPE, SIG_IGN);

  if (std::string why = sameBackend(mountA, mountB); !why.empty()) {
    std::fprintf(stderr, "ipcfs_redis_bench: %s\n", why.c_str());
    return 1;
  }

  const auto t0 = bench::Clock::now();
  bench::progress("%s run: ipcfs %s -> %s and redis-server 127.0.0.1:%d, timed figures: median of %d runs of %.1f s",
                  cfg.quick ? "quick" : "full", mountA.c_str(), mountB.c_str(), port, cfg.repeats, cfg.seconds);
  bench::RedisPeer redis = bench::measureRedisAt(cfg, port);

  std::vector<std::string> notes;
  auto guarded = [&](const char* what, auto&& f) -> Value {
    bench::progress("ipcfs: %s", what);
    try {
      return f();
    } catch (const std::exception& e) {
      notes.push_back(std::string(what) + ": " + e.what());
      bench::progress("ipcfs: %s: %s", what, e.what());
      return std::nullopt;
    }
  };
  const bench::Route across{mountA, mountB};
  Value sendReceive = guarded("A -> B, .send/.receive", [&] {
    return bench::medianOf("ipcfs .send/.receive", cfg.repeats, [&] { return bench::ipcfsOneByOne(cfg, across, false, 1, 1); });
  });
  Value lines = guarded("A -> B, .send-lines/.receive-lines", [&] {
    return bench::medianOf("ipcfs lines", cfg.repeats, [&] { return bench::ipcfsOneByOne(cfg, across, true, 1, 1); });
  });
  Value pingPong = guarded("ping-pong A <-> B", [&] {
    return bench::medianOf("ipcfs ping-pong", cfg.repeats, [&] { return bench::ipcfsPingPong(cfg, across, false); });
  });
  Value frames = guarded("A -> B, frames", [&] {
    return bench::medianOf("ipcfs frames", cfg.repeats, [&] { return bench::ipcfsFrames(cfg, across); });
  });

  utsname u{};
  ::uname(&u);
  char when[64];
  std::time_t now = std::time(nullptr);
  std::strftime(when, sizeof when, "%Y-%m-%d %H:%M", std::localtime(&now));
  std::printf("\nipcfs_redis_bench%s: %s, %u cores, %s %s, %s, %.0f s\n",
              cfg.quick ? " --quick (smoke run: figures mean nothing)" : "", bench::cpuModel().c_str(),
              std::thread::hardware_concurrency(), u.sysname, u.release, when, bench::secondsSince(t0));
  std::printf("two ipcfs daemons on one redis-server (loopback): sent through A, received through B\n");
  std::printf("timed figures: median of %d runs of %.1f s; processes not pinned to CPUs\n\n", cfg.repeats, cfg.seconds);

  bench::Table t;
  const std::string rpush = "Redis LPUSH+BRPOP", rpp = "Redis ping-pong";
  t.anchor(rpush + " 64 B (1+1 connections)", redis.pushPopPerS, "msg/s");
  t.anchor(rpp + " 64 B (two lists)", redis.pingPongPerS, "round trips/s");
  t.ratio("ipcfs A->B 64 B, .send write+fsync / .receive", sendReceive, "msg/s", rpush, redis.pushPopPerS, 0.5);
  t.ratio("ipcfs A->B 64 B, .send-lines / .receive-lines", lines, "msg/s", rpush, redis.pushPopPerS, 0.5);
  t.ratio("ipcfs A->B 64 B, frames in 64 KiB calls", frames, "msg/s", rpush, redis.pushPopPerS, 2.0);
  t.ratio("ipcfs ping-pong A<->B, .send / .receive", pingPong, "round trips/s", rpp, redis.pingPongPerS, 0);
  t.print();
  std::puts("");
  t.summary();

  if (!redis.note.empty()) notes.push_back("Redis: " + redis.note);
  for (const auto& n : notes) std::printf("note: %s\n", n.c_str());
  return 0;
}
