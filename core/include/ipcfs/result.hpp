// Results of engine calls: a value or a std::errc, never an exception. std::errc values
// are errno values, so the FUSE adapter hands them to the kernel unchanged.
#pragma once

#include <expected>
#include <system_error>

namespace ipcfs {

template <class T>
using Result = std::expected<T, std::errc>;
using Status = std::expected<void, std::errc>;

inline std::unexpected<std::errc> fail(std::errc e) { return std::unexpected(e); }
inline std::unexpected<std::errc> fail(int errnum) { return std::unexpected(static_cast<std::errc>(errnum)); }

}  // namespace ipcfs
