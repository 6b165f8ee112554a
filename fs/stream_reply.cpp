// Built like libfuse's fill_open/fill_entry/convert_stat and sent with fuse_reply_iov,
// which sends the same reply libfuse would, byte for byte, apart from the flag.
#include "stream_reply.hpp"

#include <linux/fuse.h>
#include <sys/uio.h>

#include <cmath>
#include <cstdint>

namespace ipcfs::fs {

namespace {

fuse_open_out openOut(const fuse_file_info& fi) {
  fuse_open_out out{};
  out.fh = fi.fh;
  if (fi.direct_io) out.open_flags |= FOPEN_DIRECT_IO;
  if (fi.keep_cache) out.open_flags |= FOPEN_KEEP_CACHE;
  if (fi.noflush) out.open_flags |= FOPEN_NOFLUSH;
  out.open_flags |= FOPEN_NONSEEKABLE | FOPEN_STREAM;
  // Writes to one node from many processes need not queue on its inode lock (the engine
  // takes each write whole under its own lock); the kernel allows it only for writes that
  // end within the file's size, which is why .send* report their mailbox's max_msg_size.
  out.open_flags |= FOPEN_PARALLEL_DIRECT_WRITES;
  return out;
}

void splitTimeout(double t, uint64_t& sec, uint32_t& nsec) {
  if (t <= 0) {
    sec = 0;
    nsec = 0;
    return;
  }
  sec = static_cast<uint64_t>(t);
  nsec = static_cast<uint32_t>((t - static_cast<double>(sec)) * 1e9);
}

fuse_attr attrOut(const struct stat& st) {
  fuse_attr a{};
  a.ino = st.st_ino;
  a.mode = st.st_mode;
  a.nlink = static_cast<uint32_t>(st.st_nlink);
  a.uid = st.st_uid;
  a.gid = st.st_gid;
  a.rdev = static_cast<uint32_t>(st.st_rdev);
  a.size = static_cast<uint64_t>(st.st_size);
  a.blksize = static_cast<uint32_t>(st.st_blksize);
  a.blocks = static_cast<uint64_t>(st.st_blocks);
  a.atime = static_cast<uint64_t>(st.st_atim.tv_sec);
  a.mtime = static_cast<uint64_t>(st.st_mtim.tv_sec);
  a.ctime = static_cast<uint64_t>(st.st_ctim.tv_sec);
  a.atimensec = static_cast<uint32_t>(st.st_atim.tv_nsec);
  a.mtimensec = static_cast<uint32_t>(st.st_mtim.tv_nsec);
  a.ctimensec = static_cast<uint32_t>(st.st_ctim.tv_nsec);
  return a;
}

}  // namespace

int replyOpenStream(fuse_req_t req, const fuse_file_info& fi) {
  fuse_open_out out = openOut(fi);
  iovec iov{&out, sizeof out};
  return fuse_reply_iov(req, &iov, 1);
}

int replyCreateStream(fuse_req_t req, const fuse_entry_param& e, const fuse_file_info& fi) {
  struct {
    fuse_entry_out entry;
    fuse_open_out open;
  } out{};
  out.entry.nodeid = e.ino;
  out.entry.generation = e.generation;
  splitTimeout(e.entry_timeout, out.entry.entry_valid, out.entry.entry_valid_nsec);
  splitTimeout(e.attr_timeout, out.entry.attr_valid, out.entry.attr_valid_nsec);
  out.entry.attr = attrOut(e.attr);
  out.open = openOut(fi);
  static_assert(sizeof out == sizeof(fuse_entry_out) + sizeof(fuse_open_out));
  iovec iov{&out, sizeof out};
  return fuse_reply_iov(req, &iov, 1);
}

}  // namespace ipcfs::fs
