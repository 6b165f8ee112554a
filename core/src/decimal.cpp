#include "decimal.hpp"

#include <cctype>
#include <cerrno>
#include <charconv>

namespace ipcfs {

std::optional<uint64_t> parseDecimal(std::string_view text) {
  if (!text.empty() && text.back() == '\n') text.remove_suffix(1);
  if (text.empty()) return std::nullopt;
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || end != text.data() + text.size()) return std::nullopt;
  return value;
}

Result<uint64_t> parsePost(std::string_view text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) text.remove_prefix(1);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.remove_suffix(1);
  if (text.empty() || text.front() == '+' || text.front() == '-') return fail(EINVAL);
  uint64_t n = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (end != text.data() + text.size()) return fail(EINVAL);
  if (ec == std::errc::result_out_of_range) return fail(EOVERFLOW);
  if (ec != std::errc{} || n == 0) return fail(EINVAL);
  return n;
}

}  // namespace ipcfs
