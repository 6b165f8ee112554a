// A read-only view into a buffer that stays alive as long as the view: lets a message be
// handed to a reply without copying it, even if the message is removed meanwhile.
#pragma once

#include <memory>
#include <string>
#include <string_view>

namespace ipcfs {

struct Bytes {
  std::shared_ptr<const std::string> owner;
  std::string_view view;

  static Bytes empty() { return {}; }
  static Bytes slice(std::shared_ptr<const std::string> buf, size_t off, size_t len) {
    std::string_view v(*buf);
    v = off >= v.size() ? std::string_view{} : v.substr(off, len);
    return {std::move(buf), v};
  }
};

}  // namespace ipcfs
