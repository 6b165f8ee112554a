// ipcfs_shm_sem_bench MOUNTPOINT
//
// Compares, in one run on one machine:
//  - memcpy bandwidth into a MAP_SHARED mapping of MOUNTPOINT/shm/NAME against a mapping
//    of /dev/shm/NAME, for the first pass over fresh pages (page faults included) and for
//    later passes over pages already touched;
//  - semaphore round trips: two processes ping-pong through MOUNTPOINT/sem/A and sem/B
//    (wait = pread(fd, buf, 16, 0), post = write "1") against POSIX sem_wait/sem_post on two
//    process-shared sem_t in a /dev/shm mapping.
// Prints a table with the ratio ipcfs / reference. Finishes well within a minute.
#include <semaphore.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::size_t kMemBytes = 128u << 20;  // one mapping
constexpr int kTouchedPasses = 5;              // passes after first touch
constexpr long kFuseRoundTrips = 5000;
constexpr long kPosixRoundTrips = 200000;
constexpr unsigned kChildAlarmS = 50;  // a child that lost its peer does not hang forever

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "ipcfs_shm_sem_bench: %s: %s\n", what.c_str(), std::strerror(errno));
  std::exit(1);
}

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

struct MemResult {
  double first_touch_gbs = 0;  // first pass: page faults on fresh pages included
  double touched_gbs = 0;      // best of the later passes
};

// memcpy of kMemBytes into a fresh MAP_SHARED mapping of path.
MemResult memcpy_bandwidth(const std::string& path, const std::vector<char>& src) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
  if (fd < 0) die("open " + path);
  if (::ftruncate(fd, static_cast<off_t>(kMemBytes)) != 0) die("ftruncate " + path);
  void* p = ::mmap(nullptr, kMemBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) die("mmap " + path);
  auto* dst = static_cast<char*>(p);

  MemResult r;
  auto start = Clock::now();
  std::memcpy(dst, src.data(), kMemBytes);
  r.first_touch_gbs = static_cast<double>(kMemBytes) / seconds_since(start) / 1e9;
  for (int pass = 0; pass < kTouchedPasses; ++pass) {
    start = Clock::now();
    std::memcpy(dst, src.data() + (pass % 2), kMemBytes - 1);
    double gbs = static_cast<double>(kMemBytes - 1) / seconds_since(start) / 1e9;
    if (gbs > r.touched_gbs) r.touched_gbs = gbs;
  }
  if (dst[kMemBytes / 2] != src[kMemBytes / 2 + (kTouchedPasses - 1) % 2]) {
    std::fprintf(stderr, "ipcfs_shm_sem_bench: %s: mapping lost a store\n", path.c_str());
    std::exit(1);
  }
  ::munmap(p, kMemBytes);
  ::close(fd);
  ::unlink(path.c_str());
  return r;
}

// ---------------------------------------------------------------- sem/ ping-pong

void sem_post_fd(int fd) {
  if (::write(fd, "1", 1) != 1) die("post (write) on sem/");
}

void sem_wait_fd(int fd) {
  char buf[16];
  ssize_t n;
  do {
    n = ::pread(fd, buf, sizeof buf, 0);
  } while (n < 0 && errno == EINTR);
  if (n <= 0) die("wait (pread) on sem/");
}

int open_sem(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDWR);
  if (fd < 0) die("open " + path);
  return fd;
}

void wait_child(pid_t pid) {
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::fprintf(stderr, "ipcfs_shm_sem_bench: ping-pong child failed (status %d)\n", status);
    std::exit(1);
  }
}

// Round trips per second: the parent posts A and waits on B, the child waits on A and
// posts B.
double ipcfs_round_trips(const std::string& mnt, long n) {
  std::string a = mnt + "/sem/bench-a-" + std::to_string(::getpid());
  std::string b = mnt + "/sem/bench-b-" + std::to_string(::getpid());
  for (const auto& path : {a, b}) {
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0) die("create " + path);
    ::close(fd);
  }
  pid_t pid = ::fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    ::alarm(kChildAlarmS);
    int fa = open_sem(a), fb = open_sem(b);
    for (long i = 0; i < n; ++i) {
      sem_wait_fd(fa);
      sem_post_fd(fb);
    }
    std::_Exit(0);
  }
  int fa = open_sem(a), fb = open_sem(b);
  // one warm-up round trip: the child has opened its files
  sem_post_fd(fa);
  sem_wait_fd(fb);
  auto start = Clock::now();
  for (long i = 1; i < n; ++i) {
    sem_post_fd(fa);
    sem_wait_fd(fb);
  }
  double rate = static_cast<double>(n - 1) / seconds_since(start);
  wait_child(pid);
  ::close(fa);
  ::close(fb);
  ::unlink(a.c_str());
  ::unlink(b.c_str());
  return rate;
}

double posix_round_trips(long n) {
  std::string path = "/dev/shm/ipcfs-bench-sem-" + std::to_string(::getpid());
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
  if (fd < 0) die("open " + path);
  if (::ftruncate(fd, 2 * sizeof(sem_t)) != 0) die("ftruncate " + path);
  void* p = ::mmap(nullptr, 2 * sizeof(sem_t), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) die("mmap " + path);
  ::close(fd);
  ::unlink(path.c_str());
  auto* sems = static_cast<sem_t*>(p);
  if (::sem_init(&sems[0], 1, 0) != 0 || ::sem_init(&sems[1], 1, 0) != 0) die("sem_init");
  pid_t pid = ::fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    ::alarm(kChildAlarmS);
    for (long i = 0; i < n; ++i) {
      while (::sem_wait(&sems[0]) != 0) {
        if (errno != EINTR) die("sem_wait");
      }
      ::sem_post(&sems[1]);
    }
    std::_Exit(0);
  }
  ::sem_post(&sems[0]);
  while (::sem_wait(&sems[1]) != 0) {
  }
  auto start = Clock::now();
  for (long i = 1; i < n; ++i) {
    ::sem_post(&sems[0]);
    while (::sem_wait(&sems[1]) != 0) {
      if (errno != EINTR) die("sem_wait");
    }
  }
  double rate = static_cast<double>(n - 1) / seconds_since(start);
  wait_child(pid);
  ::sem_destroy(&sems[0]);
  ::sem_destroy(&sems[1]);
  ::munmap(p, 2 * sizeof(sem_t));
  return rate;
}

void row(const char* what, const char* unit, double ipcfs, double reference) {
  std::printf("%-42s %12.2f %12.2f %8.3f  %s\n", what, ipcfs, reference, ipcfs / reference, unit);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s MOUNTPOINT\n", argv[0]);
    return 2;
  }
  std::string mnt = argv[1];
  struct stat st {};
  if (::stat((mnt + "/shm").c_str(), &st) != 0 || ::stat((mnt + "/sem").c_str(), &st) != 0) {
    die(mnt + " is not an ipcfs mount (no shm/ or sem/)");
  }
  std::string tag = std::to_string(::getpid());

  std::vector<char> src(kMemBytes);
  for (std::size_t i = 0; i < kMemBytes; ++i) src[i] = static_cast<char>(i * 131 + (i >> 12));

  MemResult fuse = memcpy_bandwidth(mnt + "/shm/bench-mem-" + tag, src);
  MemResult ref = memcpy_bandwidth("/dev/shm/ipcfs-bench-mem-" + tag, src);
  double fuse_rt = ipcfs_round_trips(mnt, kFuseRoundTrips);
  double posix_rt = posix_round_trips(kPosixRoundTrips);

  std::printf("ipcfs shm/ and sem/ vs /dev/shm and POSIX semaphores (%zu MiB mapping, "
              "%ld / %ld round trips)\n",
              kMemBytes >> 20, kFuseRoundTrips, kPosixRoundTrips);
  std::printf("%-42s %12s %12s %8s  %s\n", "measure", "ipcfs", "reference", "ratio", "unit");
  row("memcpy into mapping, after first touch", "GB/s", fuse.touched_gbs, ref.touched_gbs);
  row("memcpy into mapping, incl. first touch", "GB/s", fuse.first_touch_gbs,
      ref.first_touch_gbs);
  row("semaphore round trips (2 procs, 2 sems)", "round trips/s", fuse_rt, posix_rt);
  row("semaphore round trip latency", "us", 1e6 / fuse_rt, 1e6 / posix_rt);
  std::printf("reference: /dev/shm mapping; POSIX sem_post/sem_wait on process-shared sem_t "
              "in /dev/shm. ratio = ipcfs / reference\n");
  return 0;
}
