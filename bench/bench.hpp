// Shared pieces of ipcfs_bench: configuration, child processes with a start barrier,
// shared memory for results, timing of commands, and the measurement entry points of
// each part (kernel anchors, the FUSE floor, Redis, ipcfs).
#pragma once

#include <sys/types.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace bench {

using Clock = std::chrono::steady_clock;
using Value = std::optional<double>;  // nullopt: not measured (printed as n/a)

struct Config {
  bool quick = false;
  double seconds = 1.0;               // length of each timed run
  int repeats = 5;                    // timed runs per figure; the median is reported
  std::size_t memBytes = 256u << 20;  // mmap memcpy size
  long blockedReceivers = 10000;
  long queuedMessages = 1000000;
  std::string mount;
  pid_t daemonPid = 0;  // 0: unknown
};

// Measurement failures throw Error; the caller turns them into n/a with a note.
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
[[noreturn]] void fail(const std::string& what);       // appends strerror(errno)
[[noreturn]] void failPlain(const std::string& what);  // as is

double secondsSince(Clock::time_point t);
inline double dbl(long long v) { return static_cast<double>(v); }
void progress(const char* fmt, ...) __attribute__((format(printf, 1, 2)));  // to stderr

void logRuns(const char* what, const std::vector<double>& runs);  // "what: runs a b c" to stderr

// The median of n runs of f (nullopt if any run failed); every run is logged to stderr,
// so the spread (large on small VMs, where it depends on CPU placement) stays visible.
template <class F>
Value medianOf(const char* what, int n, F&& f) {
  std::vector<double> v;
  for (int i = 0; i < n; ++i) {
    Value x = f();
    if (!x) return std::nullopt;
    v.push_back(*x);
  }
  if (v.empty()) return std::nullopt;
  logRuns(what, v);
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// ------------------------------------------------------------------ processes
// Runs body in a forked child (alarm(alarmSeconds) as a safety net when non-zero); the
// child exits with body's return value, or 1 if it throws.
pid_t forkChild(const std::function<int()>& body, unsigned alarmSeconds);
// Waits for pid until timeoutS; then SIGKILLs it and waits a little more. True if it
// exited with status 0.
bool reap(pid_t pid, double timeoutS);
// Sends SIGTERM, then reap (SIGKILL after timeoutS).
bool terminate(pid_t pid, double timeoutS);

// A team of child processes released together once all have done their setup. Each
// role's body does its setup, calls start() (which waits for the release and returns the
// run's deadline), runs, and returns a count (messages, bytes, round trips). The
// harness measures each role from the release to its return.
using StartFn = std::function<Clock::time_point()>;
using RoleBody = std::function<long long(int index, const StartFn& start)>;
struct Role {
  RoleBody body;
  bool counted = true;  // contributes to the team's rate
};
// Returns sum(counted counts) / longest counted elapsed time, or nullopt if a child
// failed or setup did not finish within setupTimeoutS. afterFork runs in the parent once
// all children exist (close the parent's copies of pipe ends there).
Value runTeam(const std::vector<Role>& roles, double seconds, double setupTimeoutS,
              const std::function<void()>& afterFork = {});

// Anonymous MAP_SHARED memory, inherited by forked children.
void* sharedAlloc(std::size_t bytes);
void sharedFree(void* p, std::size_t bytes);

// Runs argv with stdout/stderr to /dev/null; returns wall time in ms, or nullopt if it
// failed or did not finish within timeoutS (then it is killed).
Value timeCommandMs(const std::vector<std::string>& argv, double timeoutS);
Value medianCommandMs(const std::vector<std::string>& argv, int runs, double timeoutS);

// Small file helpers
void writeAll(int fd, const void* buf, std::size_t n, const char* what);
bool exists(const std::string& path);
std::string readFile(const std::string& path);  // "" if unreadable
bool isMounted(const std::string& path);        // from /proc/self/mountinfo
long long vmRssKiB(pid_t pid);                  // -1 if unknown
long threadCount(pid_t pid);                    // -1 if unknown

struct MemcpyResult {
  Value firstTouchGBs;  // first pass over fresh pages (faults included)
  Value touchedGBs;     // best later pass
};
// memcpy of `bytes` into a fresh MAP_SHARED mapping of a new file at path.
MemcpyResult memcpyIntoMapping(const std::string& path, std::size_t bytes, int passes);

// ------------------------------------------------------------------ the parts
struct KernelAnchors {
  Value mqOneWay64, mqOneWay4k;   // messages/s
  Value mqPingPong64, mqPingPong4k;  // round trips/s
  Value pipeGBs, socketpairGBs;
  MemcpyResult devShm;
  Value semPairs;  // post+wait pairs/s in a ping-pong between 2 processes (2 per round trip)
};
KernelAnchors measureKernel(const Config& cfg);

struct FuseFloor {
  Value preadPerS;
  Value openWriteClosePerS;
  std::string note;
};
FuseFloor measureFuseFloor(const Config& cfg);

struct RedisPeer {
  Value pushPopPerS;    // LPUSH + BRPOP messages/s
  Value pingPongPerS;   // round trips/s
  std::string note;
};
RedisPeer measureRedis(const Config& cfg);             // on a redis-server of its own
RedisPeer measureRedisAt(const Config& cfg, int port);  // on 127.0.0.1:port, already running

struct IpcfsFigures {
  std::string oneMode;      // how "one message per call" was done
  Value oneByOne;           // 64 B messages/s 1+1
  Value frames;             // 64 B messages/s in 64 KiB frame calls
  Value pingPong;           // round trips/s
  Value echoSends;          // open+write+close of .send per second
  Value duplexPipeGBs;
  MemcpyResult shm;
  Value semPairs;           // post+wait pairs/s (ping-pong, 2 per round trip)
  Value fourByFour;         // 64 B messages/s total, 4 senders + 4 receivers
  long blockedReceivers = 0;
  Value blockedDaemonThreads;
  Value blockedLsMountMs;
  long queued = 0;
  std::string queueMode;
  Value rssPerMessage;      // bytes of daemon RSS growth per queued message
  Value lsQueuedMailboxS;
  std::vector<std::string> notes;
};
IpcfsFigures measureIpcfs(const Config& cfg);

// The message figures on their own, between two mounts of one backend (from == to: within
// one mount). Each makes its mailboxes through `from` (removed afterwards), sends through
// `from` and receives through `to`; ping-pong answers back the other way. lines: one
// message per call through .send-lines/.receive-lines instead of .send (write + fsync) and
// .receive (read to the end).
struct Route {
  std::string from, to;
};
Value ipcfsOneByOne(const Config& cfg, const Route& route, bool lines, int senders, int receivers);
Value ipcfsPingPong(const Config& cfg, const Route& route, bool lines);  // round trips/s
Value ipcfsFrames(const Config& cfg, const Route& route);  // 64 B msg/s in 64 KiB calls; nullopt: no .send-frames

pid_t findDaemonPid(const std::string& mount);

// A bench's command line: [--quick] then nArgs.first to nArgs.second positional arguments.
// Sets cfg.quick (and the short timings of --quick); on --help, an unknown option or a wrong
// count, prints "usage: ARGV0 USAGE" and sets exitCode (0 for --help, else 2).
struct CommandLine {
  std::vector<std::string> positional;
  int exitCode = -1;  // >= 0: exit with it
};
CommandLine parseCommandLine(int argc, char** argv, Config& cfg, const char* usage,
                             std::pair<std::size_t, std::size_t> nArgs);
std::string withoutTrailingSlash(std::string path);

}  // namespace bench
