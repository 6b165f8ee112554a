// Open and create replies for stream files (FOPEN_STREAM), which libfuse 3.14's
// fuse_file_info cannot express. A stream has no file position, so the kernel takes no
// position lock: one thread may read an end of a pipe while another writes it, on the
// same descriptor (with only FOPEN_NONSEEKABLE the write would wait for the read).
#pragma once

#include "fuse.hpp"

namespace ipcfs::fs {

// As fuse_reply_open / fuse_reply_create, plus FOPEN_STREAM.
int replyOpenStream(fuse_req_t req, const fuse_file_info& fi);
int replyCreateStream(fuse_req_t req, const fuse_entry_param& e, const fuse_file_info& fi);

}  // namespace ipcfs::fs
