// Handlers of open files (see file_ops.cpp).
#pragma once

#include "fuse.hpp"

namespace ipcfs::fs {

void opOpen(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept;
void opCreate(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, fuse_file_info* fi) noexcept;
void opRead(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) noexcept;
void opWrite(fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off, fuse_file_info* fi) noexcept;
void opFlush(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept;
void opFsync(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi) noexcept;
void opRelease(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept;
void opPoll(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, fuse_pollhandle* ph) noexcept;

}  // namespace ipcfs::fs
