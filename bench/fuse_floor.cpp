// The FUSE floor: a do-nothing low-level libfuse3 filesystem of the bench's own, with one
// in-memory file, served by a child process with libfuse's multi-threaded loop (default
// settings, as ipcfs uses it) on a temporary mount point with auto_unmount. Measured
// from one process: pread/s of 64 B on the direct_io file, and open+write+close/s.
//
// Every handler answers at once. The file is opened direct_io (so each pread is a READ
// request); close sends FLUSH and RELEASE as for any file whose close() must do work.
#include "../fs/fuse.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

#include "bench.hpp"

namespace bench {
namespace {

constexpr fuse_ino_t kFileIno = 2;
constexpr const char* kFileName = "file";
constexpr double kTimeout = 3600.0;  // entries and attributes never change

struct FloorFile {
  std::mutex mu;
  std::vector<char> data = std::vector<char>(4096, 'f');
};

FloorFile* file(fuse_req_t req) { return static_cast<FloorFile*>(fuse_req_userdata(req)); }

struct stat attrOf(fuse_ino_t ino, std::size_t size) {
  struct stat st{};
  st.st_ino = ino;
  if (ino == FUSE_ROOT_ID) {
    st.st_mode = S_IFDIR | 0755;
    st.st_nlink = 2;
  } else {
    st.st_mode = S_IFREG | 0666;
    st.st_nlink = 1;
    st.st_size = static_cast<off_t>(size);
  }
  return st;
}

void opLookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  if (parent != FUSE_ROOT_ID || std::strcmp(name, kFileName) != 0) {
    fuse_reply_err(req, ENOENT);
    return;
  }
  fuse_entry_param e{};
  e.ino = kFileIno;
  e.attr = attrOf(kFileIno, 4096);
  e.attr_timeout = kTimeout;
  e.entry_timeout = kTimeout;
  fuse_reply_entry(req, &e);
}

void opGetattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  if (ino != FUSE_ROOT_ID && ino != kFileIno) {
    fuse_reply_err(req, ENOENT);
    return;
  }
  struct stat st = attrOf(ino, 4096);
  fuse_reply_attr(req, &st, kTimeout);
}

void opSetattr(fuse_req_t req, fuse_ino_t ino, struct stat*, int, fuse_file_info*) {
  struct stat st = attrOf(ino, 4096);
  fuse_reply_attr(req, &st, kTimeout);
}

void opOpen(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  if (ino != kFileIno) {
    fuse_reply_err(req, EISDIR);
    return;
  }
  fi->direct_io = 1;
  fuse_reply_open(req, fi);
}

void opRead(fuse_req_t req, fuse_ino_t, std::size_t size, off_t off, fuse_file_info*) {
  FloorFile* f = file(req);
  char buf[4096];
  std::size_t n = 0;
  {
    std::lock_guard lock(f->mu);
    std::size_t o = static_cast<std::size_t>(off);
    if (o < f->data.size()) n = std::min({size, f->data.size() - o, sizeof buf});
    if (n) std::memcpy(buf, f->data.data() + o, n);
  }
  fuse_reply_buf(req, buf, n);
}

void opWrite(fuse_req_t req, fuse_ino_t, const char* buf, std::size_t size, off_t off,
             fuse_file_info*) {
  FloorFile* f = file(req);
  {
    std::lock_guard lock(f->mu);
    std::size_t o = static_cast<std::size_t>(off);
    if (o < f->data.size()) std::memcpy(f->data.data() + o, buf, std::min(size, f->data.size() - o));
  }
  fuse_reply_write(req, size);
}

void opFlush(fuse_req_t req, fuse_ino_t, fuse_file_info*) { fuse_reply_err(req, 0); }
void opRelease(fuse_req_t req, fuse_ino_t, fuse_file_info*) { fuse_reply_err(req, 0); }

int serveFloor(const std::string& mnt, int readyFd) {
  fuse_lowlevel_ops ops{};
  ops.lookup = opLookup;
  ops.getattr = opGetattr;
  ops.setattr = opSetattr;
  ops.open = opOpen;
  ops.read = opRead;
  ops.write = opWrite;
  ops.flush = opFlush;
  ops.release = opRelease;
  FloorFile data;
  const char* argv[] = {"ipcfs-bench-floor", "-o", "auto_unmount,fsname=ipcfs-bench-floor"};
  fuse_args args = FUSE_ARGS_INIT(3, const_cast<char**>(argv));
  fuse_session* se = fuse_session_new(&args, &ops, sizeof ops, &data);
  if (!se) return 2;
  // libfuse's auto_unmount helper (fusermount3) inherits stderr and complains that the
  // mount is gone when the session has already unmounted it: keep it quiet.
  int devnull = ::open("/dev/null", O_WRONLY);
  int savedErr = ::dup(2);
  if (devnull >= 0) ::dup2(devnull, 2);
  if (fuse_set_signal_handlers(se) != 0 || fuse_session_mount(se, mnt.c_str()) != 0) {
    if (savedErr >= 0) ::dup2(savedErr, 2);
    std::fprintf(stderr, "ipcfs_bench: cannot mount the FUSE floor on %s\n", mnt.c_str());
    fuse_session_destroy(se);
    return 3;
  }
  char c = 'm';
  if (::write(readyFd, &c, 1) != 1) return 4;
  ::close(readyFd);
  fuse_loop_config* cfg = fuse_loop_cfg_create();
  fuse_session_loop_mt(se, cfg);
  fuse_loop_cfg_destroy(cfg);
  fuse_session_unmount(se);
  fuse_remove_signal_handlers(se);
  fuse_session_destroy(se);
  return 0;
}

double preadRate(const std::string& path, double seconds) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) fail("open " + path);
  char buf[64];
  auto t = Clock::now();
  auto deadline = t + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  long long n = 0;
  for (;; ++n) {
    if ((n & 63) == 0 && Clock::now() >= deadline) break;
    if (::pread(fd, buf, sizeof buf, 0) != static_cast<ssize_t>(sizeof buf)) {
      ::close(fd);
      fail("pread " + path);
    }
  }
  double rate = dbl(n) / secondsSince(t);
  ::close(fd);
  return rate;
}

double openWriteCloseRate(const std::string& path, double seconds) {
  char buf[64];
  std::memset(buf, 'w', sizeof buf);
  auto t = Clock::now();
  auto deadline = t + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  long long n = 0;
  for (;; ++n) {
    if ((n & 15) == 0 && Clock::now() >= deadline) break;
    int fd = ::open(path.c_str(), O_WRONLY);
    if (fd < 0) fail("open " + path);
    if (::write(fd, buf, sizeof buf) != static_cast<ssize_t>(sizeof buf)) fail("write " + path);
    if (::close(fd) != 0) fail("close " + path);
  }
  return dbl(n) / secondsSince(t);
}

}  // namespace

FuseFloor measureFuseFloor(const Config& cfg) {
  FuseFloor r;
  progress("FUSE floor: null low-level filesystem, pread and open+write+close");
  char tmpl[] = "/tmp/ipcfs-bench-floor.XXXXXX";
  if (!::mkdtemp(tmpl)) {
    r.note = std::string("mkdtemp: ") + std::strerror(errno);
    return r;
  }
  const std::string mnt = tmpl;
  int ready[2];
  if (::pipe(ready) != 0) {
    r.note = "pipe failed";
    ::rmdir(mnt.c_str());
    return r;
  }
  pid_t pid = forkChild(
      [&]() -> int {
        ::close(ready[0]);
        return serveFloor(mnt, ready[1]);
      },
      0);
  ::close(ready[1]);
  pollfd p{ready[0], POLLIN, 0};
  char c = 0;
  bool up = ::poll(&p, 1, 10000) == 1 && ::read(ready[0], &c, 1) == 1;
  ::close(ready[0]);
  if (!up) {
    r.note = "the null filesystem did not mount";
  } else {
    try {
      const std::string path = mnt + "/" + kFileName;
      preadRate(path, std::min(cfg.seconds, 0.2));  // warm-up: worker threads, caches
      r.preadPerS = medianOf("FUSE floor pread", cfg.repeats, [&]() -> Value { return preadRate(path, cfg.seconds); });
      r.openWriteClosePerS = medianOf("FUSE floor open+write+close", cfg.repeats, [&]() -> Value { return openWriteCloseRate(path, cfg.seconds); });
    } catch (const std::exception& e) {
      r.note = e.what();
      progress("FUSE floor: %s", e.what());
    }
  }
  if (!terminate(pid, 10)) progress("FUSE floor daemon did not exit cleanly");
  if (isMounted(mnt)) {
    progress("FUSE floor still mounted on %s: detaching it", mnt.c_str());
    if (::umount2(mnt.c_str(), MNT_DETACH) != 0) timeCommandMs({"fusermount3", "-u", "-z", mnt}, 10);
  }
  ::rmdir(mnt.c_str());
  return r;
}

}  // namespace bench
