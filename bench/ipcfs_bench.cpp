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

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <thread>
#include <vector>

#include "bench.hpp"

namespace {

using bench::Value;

struct Row {
  std::string figure;
  Value value;
  std::string unit;
  std::string anchor;       // "" for an anchor row
  Value anchorValue;
  std::string target;       // "" when the issue sets none
  std::optional<bool> met;  // nullopt: no target, or not measurable
  bool hasTarget = false;
};

std::string grouped(long long v) {
  std::string digits = std::to_string(v < 0 ? -v : v), out;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return v < 0 ? "-" + out : out;
}

std::string number(Value v) {
  if (!v) return "n/a";
  double x = *v;
  char buf[64];
  if (std::fabs(x) >= 1000) return grouped(std::llround(x));
  if (x == std::floor(x)) return std::to_string(std::llround(x));  // counts, limits
  if (std::fabs(x) >= 100) std::snprintf(buf, sizeof buf, "%.0f", x);
  else if (std::fabs(x) >= 10) std::snprintf(buf, sizeof buf, "%.1f", x);
  else std::snprintf(buf, sizeof buf, "%.2f", x);
  return buf;
}

std::string ratioText(Value a, Value b) {
  if (!a || !b || *b == 0) return "n/a";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", *a / *b);
  return buf;
}

class Table {
 public:
  void anchor(const std::string& figure, Value v, const std::string& unit) {
    rows_.push_back({figure, v, unit, "", std::nullopt, "", std::nullopt, false});
  }
  // value / anchorValue >= minRatio (or without a target when minRatio <= 0).
  void ratio(const std::string& figure, Value v, const std::string& unit, const std::string& anchorName,
             Value anchorValue, double minRatio) {
    Row r{figure, v, unit, anchorName, anchorValue, "", std::nullopt, minRatio > 0};
    if (minRatio > 0) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "≥ %.2f", minRatio);
      r.target = buf;
      if (v && anchorValue && *anchorValue > 0) r.met = *v / *anchorValue >= minRatio;
    }
    rows_.push_back(r);
  }
  // An absolute bound: value < limit (strict) or value <= limit.
  void limit(const std::string& figure, Value v, const std::string& unit, double bound, bool strict) {
    Row r{figure, v, unit, "(absolute)", std::nullopt, "", std::nullopt, true};
    r.target = std::string(strict ? "< " : "≤ ") + number(bound) + " " + unit;
    if (v) r.met = strict ? *v < bound : *v <= bound;
    rows_.push_back(r);
  }

  void print() const {
    const std::vector<std::string> head = {"figure", "value", "unit", "anchor", "anchor value", "ratio", "target", "met"};
    std::vector<std::vector<std::string>> cells;
    for (const Row& r : rows_) {
      bool isAnchor = r.anchor.empty();
      std::string met = !r.hasTarget ? "—" : r.met ? (*r.met ? "yes" : "no") : "n/a";
      cells.push_back({r.figure, number(r.value), r.unit, isAnchor ? "—" : r.anchor,
                       isAnchor || r.anchor == "(absolute)" ? "—" : number(r.anchorValue),
                       isAnchor || r.anchor == "(absolute)" ? "—" : ratioText(r.value, r.anchorValue),
                       r.target.empty() ? "—" : r.target, met});
    }
    std::vector<std::size_t> width(head.size());
    auto len = [](const std::string& s) {  // display width: count UTF-8 lead bytes
      std::size_t n = 0;
      for (unsigned char c : s) n += (c & 0xC0) != 0x80;
      return n;
    };
    for (std::size_t i = 0; i < head.size(); ++i) width[i] = len(head[i]);
    for (const auto& row : cells)
      for (std::size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], len(row[i]));
    auto line = [&](const std::vector<std::string>& row) {
      std::string out = "|";
      for (std::size_t i = 0; i < row.size(); ++i) {
        bool right = i == 1 || i == 4 || i == 5;
        std::string pad(width[i] - len(row[i]), ' ');
        out += ' ';
        if (right) out += pad;
        out += row[i];
        if (!right) out += pad;
        out += " |";
      }
      std::puts(out.c_str());
    };
    line(head);
    std::string sep = "|";
    for (std::size_t i = 0; i < head.size(); ++i) {
      bool right = i == 1 || i == 4 || i == 5;
      sep += right ? std::string(width[i] + 1, '-') + ":|" : std::string(width[i] + 2, '-') + "|";
    }
    std::puts(sep.c_str());
    for (const auto& row : cells) line(row);
  }

  void summary() const {
    int met = 0, missed = 0, na = 0;
    for (const Row& r : rows_) {
      if (!r.hasTarget) continue;
      if (!r.met) ++na;
      else if (*r.met) ++met;
      else ++missed;
    }
    std::printf("targets: %d met, %d not met, %d n/a\n", met, missed, na);
  }

 private:
  std::vector<Row> rows_;
};

std::string cpuModel() {
  std::string info = bench::readFile("/proc/cpuinfo");
  auto pos = info.find("model name");
  if (pos == std::string::npos) return "unknown CPU";
  pos = info.find(':', pos);
  auto end = info.find('\n', pos);
  return info.substr(pos + 2, end - pos - 2);
}

int usage(const char* argv0) {
  std::fprintf(stderr, "usage: %s [--quick] MOUNTPOINT [IPCFS_DAEMON_PID]\n", argv0);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  bench::Config cfg;
  std::vector<std::string> pos;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--quick") cfg.quick = true;
    else if (a == "--help" || a == "-h") return usage(argv[0]), 0;
    else if (!a.empty() && a[0] == '-') return usage(argv[0]);
    else pos.push_back(a);
  }
  if (pos.empty() || pos.size() > 2) return usage(argv[0]);
  cfg.mount = pos[0];
  while (cfg.mount.size() > 1 && cfg.mount.back() == '/') cfg.mount.pop_back();
  if (pos.size() == 2) cfg.daemonPid = static_cast<pid_t>(std::atol(pos[1].c_str()));
  if (cfg.daemonPid <= 0) cfg.daemonPid = bench::findDaemonPid(cfg.mount);
  if (cfg.quick) {
    cfg.seconds = 0.1;
    cfg.repeats = 1;
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
              cpuModel().c_str(), std::thread::hardware_concurrency(), u.sysname, u.release, when,
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
