// The daemon's command line: ipcfs's own options are taken out, FUSE's are left in args.
#pragma once

#include <spdlog/common.h>

#include <expected>
#include <string>
#include <vector>

#include "ipcfs/limits.hpp"

namespace ipcfs::fs {

struct DaemonOptions {
  Limits limits;
  spdlog::level::level_enum logLevel = spdlog::level::info;
  bool help = false;
  bool version = false;
  std::string mountpoint;
  std::string stateDir;  // durable mode when set (absolute: the daemon changes to / when it forks)
  uint64_t journalSize = uint64_t{64} << 20;  // a snapshot is written once the journal is this big
  std::string backend;            // redis://HOST:PORT[,HOST:PORT...]: mailboxes/ and sem/ shared there
  uint32_t backendTimeoutMs = 1000;  // a backend call fails with EIO after this
  uint32_t backendLeaseMs = 5000;    // a claim of a daemon that died comes back after this
  std::vector<std::string> fuseArgs;  // argv for libfuse, argv[0] first
};

// Returns a one-line error message on bad input.
std::expected<DaemonOptions, std::string> parseDaemonOptions(int argc, char** argv);

// "1048576", "64K", "512M", "1G", "2T" (binary multiples).
std::expected<uint64_t, std::string> parseSize(std::string_view text);

extern const char* const kUsage;

}  // namespace ipcfs::fs
