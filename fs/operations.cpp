// The one place that registers the operation table.
#include "context.hpp"
#include "file_ops.hpp"
#include "node_ops.hpp"

namespace ipcfs::fs {

namespace {

void opInit(void*, fuse_conn_info* conn) {
  // shm/ pages change only through the kernel's own page cache, so there is nothing to
  // re-validate; re-validating whenever attributes are fetched would drop every mapper's
  // pages.
  conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
}

}  // namespace

fuse_lowlevel_ops makeOperations() {
  fuse_lowlevel_ops ops{};
  ops.init = opInit;
  ops.lookup = opLookup;
  ops.forget = opForget;
  ops.forget_multi = opForgetMulti;
  ops.getattr = opGetattr;
  ops.setattr = opSetattr;
  ops.readlink = opReadlink;
  ops.mknod = opMknod;
  ops.mkdir = opMkdir;
  ops.unlink = opUnlink;
  ops.rmdir = opRmdir;
  ops.symlink = opSymlink;
  ops.rename = opRename;
  ops.link = opLink;
  ops.open = opOpen;
  ops.read = opRead;
  ops.write = opWrite;
  ops.flush = opFlush;
  ops.release = opRelease;
  ops.fsync = opFsync;
  ops.opendir = opOpendir;
  ops.readdir = opReaddir;
  ops.releasedir = opReleasedir;
  ops.setxattr = opSetxattr;
  ops.getxattr = opGetxattr;
  ops.listxattr = opListxattr;
  ops.removexattr = opRemovexattr;
  ops.create = opCreate;
  ops.poll = opPoll;
  return ops;
}

}  // namespace ipcfs::fs
