// CRC32C (Castagnoli), the checksum of the durable store's frames and snapshots: the SSE4.2
// instruction where the CPU has it, a table otherwise (same results).
#pragma once

#include <cstdint>
#include <string_view>

namespace ipcfs::durable {

// `crc` continues an earlier checksum (0 to start).
uint32_t crc32c(std::string_view data, uint32_t crc = 0);

}  // namespace ipcfs::durable
