// Limits and defaults of one engine instance, set from the daemon's options.
#pragma once

#include <cstdint>
#include <sys/types.h>

namespace ipcfs {

inline constexpr uint64_t kDefaultMaxMsgSize = uint64_t{1} << 20;   // 1 MiB
inline constexpr uint64_t kMaxMaxMsgSize = uint64_t{1} << 40;       // sanity bound for the xattr
inline constexpr uint64_t kUnlimited = UINT64_MAX;
inline constexpr uint64_t kDefaultMaxSegmentSize = uint64_t{1} << 30;  // 1 GiB per shm/ segment
inline constexpr uint64_t kSemValueMax = 2147483647;                   // SEM_VALUE_MAX on Linux
inline constexpr size_t kPipeBufferSize = 64 * 1024;                    // per direction of a duplex pipe
inline constexpr size_t kPipeAtomicWrite = 4096;                        // PIPE_BUF

struct Limits {
  uint64_t maxBytes = kUnlimited;  // all message bytes the daemon holds (queued, in flight, being written)
  uint64_t defaultMaxMsgSize = kDefaultMaxMsgSize;
  uint64_t maxSegmentSize = kDefaultMaxSegmentSize;
  uid_t ownerUid = 0;  // owner of the root and top-level directories
  gid_t ownerGid = 0;
};

}  // namespace ipcfs
