// Child processes, the start barrier, shared memory, command timing and small helpers.
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include "bench.hpp"

namespace bench {

void fail(const std::string& what) { throw Error(what + ": " + std::strerror(errno)); }
void failPlain(const std::string& what) { throw Error(what); }

double secondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

void progress(const char* fmt, ...) {
  std::va_list ap;
  va_start(ap, fmt);
  std::fprintf(stderr, "%s: ", program_invocation_short_name);
  std::vfprintf(stderr, fmt, ap);
  std::fputc('\n', stderr);
  va_end(ap);
}

void logRuns(const char* what, const std::vector<double>& runs) {
  std::string line;
  char buf[32];
  for (double r : runs) {
    std::snprintf(buf, sizeof buf, " %.4g", r);
    line += buf;
  }
  progress("  %s: runs%s", what, line.c_str());
}

// ------------------------------------------------------------------ processes
pid_t forkChild(const std::function<int()>& body, unsigned alarmSeconds) {
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) fail("fork");
  if (pid > 0) return pid;
  if (alarmSeconds) ::alarm(alarmSeconds);
  int rc = 1;
  try {
    rc = body();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: child %d: %s\n", program_invocation_short_name, static_cast<int>(::getpid()), e.what());
    rc = 1;
  }
  std::fflush(nullptr);
  std::_Exit(rc);
}

namespace {

// Waits for pid to exit until the deadline: pidfd + poll (exact), else WNOHANG polling.
bool waitUntil(pid_t pid, Clock::time_point deadline, int* status) {
  int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  for (;;) {
    pid_t r = ::waitpid(pid, status, WNOHANG);
    if (r == pid) {
      if (pidfd >= 0) ::close(pidfd);
      return true;
    }
    if (r < 0 && errno != EINTR) {
      if (pidfd >= 0) ::close(pidfd);
      *status = -1;
      return true;  // not our child any more
    }
    double left = std::chrono::duration<double>(deadline - Clock::now()).count();
    if (left <= 0) break;
    if (pidfd >= 0) {
      pollfd p{pidfd, POLLIN, 0};
      ::poll(&p, 1, static_cast<int>(std::min(left * 1000.0, 1000.0)) + 1);
    } else {
      ::usleep(1000);
    }
  }
  if (pidfd >= 0) ::close(pidfd);
  return false;
}

}  // namespace

bool reap(pid_t pid, double timeoutS) {
  int status = 0;
  auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                     std::chrono::duration<double>(timeoutS));
  if (!waitUntil(pid, deadline, &status)) {
    progress("child %d did not finish within %.0f s: killing it", static_cast<int>(pid), timeoutS);
    ::kill(pid, SIGKILL);
    if (!waitUntil(pid, Clock::now() + std::chrono::seconds(10), &status)) {
      progress("child %d survives SIGKILL (blocked in the kernel?)", static_cast<int>(pid));
    }
    return false;
  }
  return status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

bool terminate(pid_t pid, double timeoutS) {
  ::kill(pid, SIGTERM);
  return reap(pid, timeoutS);
}

void* sharedAlloc(std::size_t bytes) {
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) fail("mmap shared");
  std::memset(p, 0, bytes);
  return p;
}

void sharedFree(void* p, std::size_t bytes) { ::munmap(p, bytes); }

namespace {

struct TeamSlot {
  long long count;
  double seconds;
  int done;
};

}  // namespace

Value runTeam(const std::vector<Role>& roles, double seconds, double setupTimeoutS,
              const std::function<void()>& afterFork) {
  const std::size_t n = roles.size();
  auto* slots = static_cast<TeamSlot*>(sharedAlloc(sizeof(TeamSlot) * n));
  int ready[2], go[2];
  if (::pipe2(ready, O_CLOEXEC) != 0 || ::pipe2(go, O_CLOEXEC) != 0) fail("pipe");
  const auto run = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  const unsigned alarmS = static_cast<unsigned>(seconds + setupTimeoutS) + 60;
  std::vector<pid_t> pids;
  for (std::size_t i = 0; i < n; ++i) {
    const Role& role = roles[i];
    pids.push_back(forkChild(
        [&, i]() -> int {
          ::close(ready[0]);
          ::close(go[1]);
          Clock::time_point begin{};
          StartFn start = [&]() {
            char c = 'r';
            writeAll(ready[1], &c, 1, "team ready");
            ssize_t r;
            do {
              r = ::read(go[0], &c, 1);
            } while (r < 0 && errno == EINTR);
            begin = Clock::now();
            return begin + run;
          };
          long long count = role.body(static_cast<int>(i), start);
          slots[i].count = count;
          slots[i].seconds = secondsSince(begin);
          slots[i].done = 1;
          return 0;
        },
        alarmS));
  }
  ::close(ready[1]);
  ::close(go[0]);
  if (afterFork) afterFork();

  // Release once every child reported ready (or give up at the deadline).
  std::size_t readyCount = 0;
  auto setupDeadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                          std::chrono::duration<double>(setupTimeoutS));
  while (readyCount < n) {
    double left = std::chrono::duration<double>(setupDeadline - Clock::now()).count();
    if (left <= 0) break;
    pollfd p{ready[0], POLLIN, 0};
    int pr = ::poll(&p, 1, static_cast<int>(std::min(left * 1000.0, 100.0)) + 1);
    if (pr <= 0) {
      // A child that failed in its setup ends the wait at once.
      bool someoneDied = false;
      for (pid_t pid : pids) {
        siginfo_t info{};
        if (::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
            info.si_pid == pid) {
          someoneDied = true;
        }
      }
      if (someoneDied) break;
      continue;
    }
    char buf[64];
    ssize_t r = ::read(ready[0], buf, sizeof buf);
    if (r <= 0) break;  // every child has gone
    readyCount += static_cast<std::size_t>(r);
  }
  bool ok = readyCount == n;
  if (!ok) {
    progress("team setup incomplete (%zu of %zu ready): stopping it", readyCount, n);
    for (pid_t pid : pids) ::kill(pid, SIGKILL);
  }
  ::close(go[1]);  // the release
  ::close(ready[0]);
  for (pid_t pid : pids) ok = reap(pid, seconds + 60.0) && ok;

  Value result;
  if (ok) {
    long long total = 0;
    double longest = 0;
    for (std::size_t i = 0; i < n; ++i) {
      if (!roles[i].counted) continue;
      if (!slots[i].done) ok = false;
      total += slots[i].count;
      longest = std::max(longest, slots[i].seconds);
    }
    if (ok && longest > 0) result = dbl(total) / longest;
  }
  sharedFree(slots, sizeof(TeamSlot) * n);
  return result;
}

Value timeCommandMs(const std::vector<std::string>& argv, double timeoutS) {
  auto t0 = Clock::now();
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) fail("fork");
  if (pid == 0) {
    int devnull = ::open("/dev/null", O_WRONLY);
    if (devnull >= 0) {
      ::dup2(devnull, 1);
      ::dup2(devnull, 2);
    }
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    std::_Exit(127);
  }
  if (!reap(pid, timeoutS)) return std::nullopt;
  return secondsSince(t0) * 1000.0;
}

Value medianCommandMs(const std::vector<std::string>& argv, int runs, double timeoutS) {
  std::vector<double> times;
  for (int i = 0; i < runs; ++i) {
    Value t = timeCommandMs(argv, timeoutS);
    if (!t) return std::nullopt;
    times.push_back(*t);
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// ------------------------------------------------------------------ files
void writeAll(int fd, const void* buf, std::size_t n, const char* what) {
  const char* p = static_cast<const char*>(buf);
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) fail(what);
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

bool exists(const std::string& path) {
  struct stat st{};
  return ::stat(path.c_str(), &st) == 0;
}

std::string readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return {};
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool isMounted(const std::string& path) {
  std::istringstream in(readFile("/proc/self/mountinfo"));
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string f[5];
    for (auto& x : f) fields >> x;
    if (f[4] == path) return true;
  }
  return false;
}

long long vmRssKiB(pid_t pid) {
  std::istringstream in(readFile("/proc/" + std::to_string(pid) + "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::atoll(line.c_str() + 6);
  }
  return -1;
}

long threadCount(pid_t pid) {
  DIR* d = ::opendir(("/proc/" + std::to_string(pid) + "/task").c_str());
  if (!d) return -1;
  long n = 0;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] != '.') ++n;
  }
  ::closedir(d);
  return n;
}

pid_t findDaemonPid(const std::string& mount) {
  char* real = ::realpath(mount.c_str(), nullptr);
  std::string want = real ? real : mount;
  std::free(real);
  DIR* d = ::opendir("/proc");
  if (!d) return 0;
  pid_t found = 0;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    std::string dir = std::string("/proc/") + e->d_name;
    char exe[4096];
    ssize_t n = ::readlink((dir + "/exe").c_str(), exe, sizeof exe - 1);
    if (n <= 0) continue;
    exe[n] = 0;
    std::string exeName = exe;
    exeName = exeName.substr(exeName.rfind('/') + 1);
    if (exeName.rfind("ipcfs", 0) != 0) continue;  // "ipcfs" (or "ipcfs (deleted)")
    std::string cmdline = readFile(dir + "/cmdline");
    std::size_t pos = 0;
    while (pos < cmdline.size()) {
      std::size_t end = cmdline.find('\0', pos);
      if (end == std::string::npos) end = cmdline.size();
      std::string arg = cmdline.substr(pos, end - pos);
      if (arg == want || arg == mount) {
        found = static_cast<pid_t>(std::atol(e->d_name));
        break;
      }
      pos = end + 1;
    }
    if (found) break;
  }
  ::closedir(d);
  return found;
}

// ------------------------------------------------------------------ memcpy
MemcpyResult memcpyIntoMapping(const std::string& path, std::size_t bytes, int passes) {
  static std::vector<char> src;
  if (src.size() < bytes + 64) {
    src.resize(bytes + 64);
    for (std::size_t i = 0; i < src.size(); ++i) src[i] = static_cast<char>(i * 131 + (i >> 12));
  }
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
  if (fd < 0) fail("create " + path);
  MemcpyResult r;
  void* p = MAP_FAILED;
  try {
    if (::ftruncate(fd, static_cast<off_t>(bytes)) != 0) fail("ftruncate " + path);
    p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) fail("mmap " + path);
    auto* dst = static_cast<char*>(p);
    auto t = Clock::now();
    std::memcpy(dst, src.data(), bytes);
    r.firstTouchGBs = dbl(static_cast<long long>(bytes)) / secondsSince(t) / 1e9;
    double best = 0;
    for (int pass = 1; pass <= passes; ++pass) {
      t = Clock::now();
      std::memcpy(dst, src.data() + pass, bytes);
      best = std::max(best, dbl(static_cast<long long>(bytes)) / secondsSince(t) / 1e9);
    }
    r.touchedGBs = best;
    if (dst[bytes / 2] != src[bytes / 2 + static_cast<std::size_t>(passes)]) {
      failPlain(path + ": the mapping lost a store");
    }
  } catch (...) {
    if (p != MAP_FAILED) ::munmap(p, bytes);
    ::close(fd);
    ::unlink(path.c_str());
    throw;
  }
  ::munmap(p, bytes);
  ::close(fd);
  ::unlink(path.c_str());
  return r;
}

CommandLine parseCommandLine(int argc, char** argv, Config& cfg, const char* usage,
                             std::pair<std::size_t, std::size_t> nArgs) {
  CommandLine out;
  bool help = false, bad = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--quick") cfg.quick = true;
    else if (a == "--help" || a == "-h") help = true;
    else if (!a.empty() && a[0] == '-') bad = true;
    else out.positional.push_back(a);
  }
  bad = bad || out.positional.size() < nArgs.first || out.positional.size() > nArgs.second;
  if (help || bad) {
    std::fprintf(stderr, "usage: %s %s\n", argv[0], usage);
    out.exitCode = help ? 0 : 2;
  }
  if (cfg.quick) {
    cfg.seconds = 0.1;
    cfg.repeats = 1;
  }
  return out;
}

std::string withoutTrailingSlash(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  return path;
}

}  // namespace bench
