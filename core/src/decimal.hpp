// Decimal text as xattr values and control-file contents use it.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace ipcfs {

// A non-negative decimal integer, optionally followed by one '\n'. Nothing else.
std::optional<uint64_t> parseDecimal(std::string_view text);

}  // namespace ipcfs
