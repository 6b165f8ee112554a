// Wall-clock time for file timestamps.
#pragma once

#include <time.h>

namespace ipcfs {

inline timespec now() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return ts;
}

}  // namespace ipcfs
