// shm/ speed: lifting the kernel's per-FUSE-mount cap on dirty pages.
#pragma once

#include <string>

namespace ipcfs::fs {

// The kernel holds every FUSE mount to 1% of the dirty-page budget (strict_limit, max_ratio
// of its bdi: about 49 MB on a 24 GiB machine), so a process writing a mapped shm/ segment
// bigger than that waits for each page to be written back to the daemon: 0.15x the speed
// of /dev/shm. ipcfs writes back into its own memory, never to a slow disk, so as root it
// lifts the cap for its own mount, which then shares the global budget like any
// filesystem. Returns what was done, for the log (empty: not root, or nothing to do).
std::string relaxDirtyLimit(const std::string& mountpoint);

}  // namespace ipcfs::fs
