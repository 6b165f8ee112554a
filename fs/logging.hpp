// spdlog setup: named loggers, stderr in the foreground, syslog in the background, and
// libfuse's own messages routed into the "fuse" logger.
#pragma once

#include <spdlog/common.h>

namespace ipcfs::fs {

// Call after daemonizing: spdlog's threads and syslog do not survive fork.
void setupLogging(bool foreground, spdlog::level::level_enum level);

}  // namespace ipcfs::fs
