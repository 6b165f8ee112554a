// Who is asking: the process (thread group id, never a thread id) and its credentials.
#pragma once

#include <sys/types.h>

namespace ipcfs {

struct Caller {
  pid_t pid = 0;  // tgid; 0 when the kernel does not say (RELEASE, writeback)
  uid_t uid = 0;
  gid_t gid = 0;
};

}  // namespace ipcfs
