// The caller of a request, as the engine sees it.
#pragma once

#include "fuse.hpp"
#include "ipcfs/caller.hpp"

namespace ipcfs::fs {

// fuse_req_ctx gives a thread id; with `withPid` it is mapped to its thread group (from
// /proc), which costs a file read, so only handlers that record a pid ask for it.
Caller callerOf(fuse_req_t req, bool withPid = false);

}  // namespace ipcfs::fs
