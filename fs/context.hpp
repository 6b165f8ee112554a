// What every request handler reaches through fuse_req_userdata(): the engine and logger.
#pragma once

#include <spdlog/logger.h>

#include <memory>

#include "fuse.hpp"
#include "ipcfs/engine.hpp"

namespace ipcfs::fs {

struct Filesystem {
  explicit Filesystem(Limits limits) : engine(limits) {}
  Engine engine;
  std::shared_ptr<spdlog::logger> log;  // "fs"; set once the daemon has its final process
  fuse_session* session = nullptr;      // for notifications to the kernel
  bool sharedBackend = false;           // --backend: other hosts change mailboxes/ and sem/
};

inline Filesystem& fsOf(fuse_req_t req) { return *static_cast<Filesystem*>(fuse_req_userdata(req)); }

// Registers every handler of the low-level API.
fuse_lowlevel_ops makeOperations();

}  // namespace ipcfs::fs
