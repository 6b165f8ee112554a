// Rules for the names users give to objects.
#pragma once

#include <string_view>

#include "ipcfs/result.hpp"

namespace ipcfs {

inline constexpr size_t kMaxNameLength = 255;

// 1–255 bytes, no '/', no NUL; a leading '.' is reserved for control nodes (EINVAL).
Status validateName(std::string_view name);

// Control node names of a mailbox (never listed, never creatable).
bool isReservedName(std::string_view name);

}  // namespace ipcfs
