// ipcfs_bench [--quick] MOUNTPOINT [IPCFS_DAEMON_PID]
//
// Holds ipcfs (mounted on MOUNTPOINT) against, in one run on one machine:
//  - kernel anchors: POSIX mq one-way and ping-pong (64 B, 4 KiB), pipe and socketpair
//    throughput (64 KiB writes), /dev/shm mmap memcpy, POSIX process-shared semaphores;
//  - the FUSE floor: a do-nothing low-level libfuse3 filesystem of the bench's own;
//  - Redis (redis-server started here on a loopback port, hiredis clients);
// and prints one table: every figure with its anchor, the ratio, the target and
// whether it is met. Progress goes to stderr, the table to stdout. --quick is a smoke
// run of a few seconds with tiny counts (its figures mean nothing).
//
// The daemon's pid (for its thread count and RSS) is found from the processes whose
// command line names the mount point, unless given.
#include <signal.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <thread>
#include <vector>

#include "bench.hpp"
#include "bench_table.hpp"

namespace {

using bench::Value;
using bench::grouped;
using bench::Table;

}  // namespace

int main(int argc, char** argv) {
  bench::Config cfg;
  const bench::CommandLine cl = bench::parseCommandLine(argc, argv, cfg, "[--quick] MOUNTPOINT [IPCFS_DAEMON_PID]", {1, 2});
  if (cl.exitCode >= 0) return cl.exitCode;
  const std::vector<std::string>& pos = cl.positional;
  cfg.mount = bench::withoutTrailingSlash(pos[0]);
  if (pos.size() == 2) cfg.daemonPid = static_cast<pid_t>(std::atol(pos[1].c_str()));
  if (cfg.daemonPid <= 0) cfg.daemonPid = bench::findDaemonPid(cfg.mount);
  if (cfg.quick) {
    cfg.memBytes = 8u << 20;
    cfg.blockedReceivers = 50;
    cfg.queuedMessages = 5000;
  }
  ::signal(SIGPIPE, SIG_IGN);

  const auto t0 = bench::Clock::now();
  bench::progress("%s run against %s (daemon pid %d), timed figures: median of %d runs of %.1f s",
                  cfg.quick ? "quick" : "full", cfg.mount.c_str(), static_cast<int>(cfg.daemonPid), cfg.repeats,
                  cfg.seconds);
  bench::KernelAnchors k = bench::measureKernel(cfg);
  bench::FuseFloor floor = bench::measureFuseFloor(cfg);
  bench::RedisPeer redis = bench::measureRedis(cfg);
  bench::IpcfsFigures f = bench::measureIpcfs(cfg);

  utsname u{};
  ::uname(&u);
  char when[64];
  std::time_t now = std::time(nullptr);
  std::strftime(when, sizeof when, "%Y-%m-%d %H:%M", std::localtime(&now));
  std::printf("\nipcfs_bench%s: %s, %u cores, %s %s, %s, %.0f s\n", cfg.quick ? " --quick (smoke run: figures mean nothing)" : "",
              bench::cpuModel().c_str(), std::thread::hardware_concurrency(), u.sysname, u.release, when,
              bench::secondsSince(t0));
  std::printf("timed figures: median of %d runs of %.1f s; processes not pinned to CPUs\n", cfg.repeats, cfg.seconds);
  std::printf("one message per call: %s\n\n", f.oneMode.empty() ? "n/a" : f.oneMode.c_str());

  Table t;
  const std::string mq64 = "POSIX mq one-way 64 B", mqpp = "POSIX mq ping-pong 64 B";
  const std::string fpread = "FUSE floor pread", fowc = "FUSE floor open+write+close";
  const std::string rpush = "Redis LPUSH+BRPOP", rpp = "Redis ping-pong";
  t.anchor(mq64, k.mqOneWay64, "msg/s");
  t.anchor("POSIX mq one-way 4 KiB", k.mqOneWay4k, "msg/s");
  t.anchor(mqpp, k.mqPingPong64, "round trips/s");
  t.anchor("POSIX mq ping-pong 4 KiB", k.mqPingPong4k, "round trips/s");
  t.anchor("pipe, 64 KiB writes", k.pipeGBs, "GB/s");
  t.anchor("socketpair, 64 KiB writes", k.socketpairGBs, "GB/s");
  t.anchor("/dev/shm memcpy, after first touch", k.devShm.touchedGBs, "GB/s");
  t.anchor("/dev/shm memcpy, incl. first touch", k.devShm.firstTouchGBs, "GB/s");
  t.anchor("POSIX sem post+wait pairs (ping-pong)", k.semPairs, "pairs/s");
  t.anchor(fpread + " (64 B, direct_io)", floor.preadPerS, "calls/s");
  t.anchor(fowc, floor.openWriteClosePerS, "files/s");
  t.anchor(rpush + " (1+1 connections)", redis.pushPopPerS, "msg/s");
  t.anchor(rpp + " (two lists)", redis.pingPongPerS, "round trips/s");

  const std::string one = "ipcfs 64 B msg, 1 per call, 1+1";
  t.ratio(one, f.oneByOne, "msg/s", fpread, floor.preadPerS, 0.45);
  t.ratio(one, f.oneByOne, "msg/s", rpush, redis.pushPopPerS, 1.0);
  t.ratio("ipcfs 64 B msg, frames in 64 KiB calls", f.frames, "msg/s", mq64, k.mqOneWay64, 0.5);
  t.ratio("ipcfs ping-pong, 2 mailboxes", f.pingPong, "round trips/s", mqpp, k.mqPingPong64, 0.3);
  t.ratio("ipcfs ping-pong, 2 mailboxes", f.pingPong, "round trips/s", rpp, redis.pingPongPerS, 1.0);
  t.ratio("ipcfs echo-style send (open+write+close)", f.echoSends, "msg/s", fowc, floor.openWriteClosePerS, 0.9);
  t.ratio("ipcfs duplex pipe, 64 KiB writes", f.duplexPipeGBs, "GB/s", "pipe", k.pipeGBs, 0.8);
  t.ratio("ipcfs shm/ memcpy, after first touch", f.shm.touchedGBs, "GB/s", "/dev/shm", k.devShm.touchedGBs, 0.95);
  t.ratio("ipcfs shm/ memcpy, incl. first touch", f.shm.firstTouchGBs, "GB/s", "/dev/shm", k.devShm.firstTouchGBs, 0.25);
  t.ratio("ipcfs sem/ post+wait pairs (ping-pong)", f.semPairs, "pairs/s", fpread, floor.preadPerS, 0.45);
  t.ratio("ipcfs sem/ post+wait pairs (ping-pong)", f.semPairs, "pairs/s", "POSIX sem", k.semPairs, 0);
  t.ratio("ipcfs 64 B msg, 1 per call, 4+4 total", f.fourByFour, "msg/s", "ipcfs 1+1", f.oneByOne, 1.5);
  const std::string blocked = "ipcfs " + grouped(f.blockedReceivers) + " receivers blocked: ";
  t.limit(blocked + "daemon threads", f.blockedDaemonThreads, "threads", 16, false);
  t.limit(blocked + "ls of the mount", f.blockedLsMountMs, "ms", 50, true);
  const std::string queued = "ipcfs " + grouped(f.queued) + " queued 64 B msg: ";
  t.limit(queued + "daemon RSS growth", f.rssPerMessage, "B/msg", 64 + 160, false);
  t.limit(queued + "ls of the mailbox", f.lsQueuedMailboxS, "s", 5, true);
  t.print();
  std::puts("");
  t.summary();

  std::vector<std::string> notes = f.notes;
  if (!f.queueMode.empty()) notes.push_back("queued messages sent with " + f.queueMode);
  if (!f.frames) notes.push_back("frames: no .send-frames/.receive-frames in this build (or the run failed)");
  if (!f.duplexPipeGBs) notes.push_back("duplex pipe: not measured (see above)");
  if (!floor.note.empty()) notes.push_back("FUSE floor: " + floor.note);
  if (!redis.note.empty()) notes.push_back("Redis: " + redis.note);
  if (cfg.daemonPid <= 0) notes.push_back("daemon pid unknown: pass it as the second argument");
  for (const auto& n : notes) std::printf("note: %s\n", n.c_str());
  return 0;
}
