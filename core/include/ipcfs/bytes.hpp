// A read-only view into a buffer that stays alive as long as the view: lets a message be
// handed to a reply without copying it, even if the message is removed meanwhile.
#pragma once

#include <memory>
#include <string>
#include <string_view>

namespace ipcfs {

struct Bytes {
  std::shared_ptr<const void> owner;  // whatever holds the bytes (a string, a message)
  std::string_view view;

  static Bytes empty() { return {}; }
  // `len` bytes from `off` of `all`, which `owner` keeps alive.
  static Bytes slice(std::shared_ptr<const void> owner, std::string_view all, size_t off, size_t len) {
    all = off >= all.size() ? std::string_view{} : all.substr(off, len);
    return {std::move(owner), all};
  }
  static Bytes slice(std::shared_ptr<const std::string> buf, size_t off, size_t len) {
    const std::string_view all(*buf);
    return slice(std::shared_ptr<const void>(std::move(buf)), all, off, len);
  }
};

}  // namespace ipcfs
