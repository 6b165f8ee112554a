// Decimal text as xattr values and control-file contents use it.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "ipcfs/result.hpp"

namespace ipcfs {

// A non-negative decimal integer, optionally followed by one '\n'. Nothing else.
std::optional<uint64_t> parseDecimal(std::string_view text);

// A semaphore post: "N" with optional surrounding white space, N a positive decimal
// integer (EINVAL; EOVERFLOW past uint64).
Result<uint64_t> parsePost(std::string_view text);

}  // namespace ipcfs
