// Handlers of names, attributes, directories and xattrs (see node_ops.cpp, dir_ops.cpp,
// xattr_ops.cpp).
#pragma once

#include "fuse.hpp"

namespace ipcfs::fs {

void opLookup(fuse_req_t req, fuse_ino_t parent, const char* name) noexcept;
void opForget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) noexcept;
void opForgetMulti(fuse_req_t req, size_t count, fuse_forget_data* forgets) noexcept;
void opGetattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept;
void opSetattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info* fi) noexcept;
void opReadlink(fuse_req_t req, fuse_ino_t ino) noexcept;

void opMkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) noexcept;
void opRmdir(fuse_req_t req, fuse_ino_t parent, const char* name) noexcept;
void opUnlink(fuse_req_t req, fuse_ino_t parent, const char* name) noexcept;
void opRename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent, const char* newname,
              unsigned int flags) noexcept;
void opMknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) noexcept;
void opSymlink(fuse_req_t req, const char* link, fuse_ino_t parent, const char* name) noexcept;
void opLink(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char* newname) noexcept;
void opOpendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept;
void opReaddir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) noexcept;
void opReleasedir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept;

void opSetxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size,
                int flags) noexcept;
void opGetxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) noexcept;
void opListxattr(fuse_req_t req, fuse_ino_t ino, size_t size) noexcept;
void opRemovexattr(fuse_req_t req, fuse_ino_t ino, const char* name) noexcept;

}  // namespace ipcfs::fs
