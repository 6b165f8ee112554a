// Name validation for mailboxes and messages.
#include "names.hpp"

#include <cerrno>

namespace ipcfs {

Status validateName(std::string_view name) {
  if (name.size() > kMaxNameLength) return fail(ENAMETOOLONG);
  if (name.empty() || name.find('/') != std::string_view::npos || name.find('\0') != std::string_view::npos)
    return fail(EINVAL);
  if (isReservedName(name)) return fail(EINVAL);
  return {};
}

bool isReservedName(std::string_view name) { return !name.empty() && name.front() == '.'; }

}  // namespace ipcfs
