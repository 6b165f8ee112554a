#include "dirty_limit.hpp"

#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace ipcfs::fs {

namespace {

// /proc/self/mountinfo escapes space, tab, newline and backslash as \ooo.
std::string unescape(const std::string& field) {
  std::string out;
  for (size_t i = 0; i < field.size(); ++i) {
    if (field[i] == '\\' && i + 3 < field.size()) {
      out.push_back(static_cast<char>(std::strtol(field.substr(i + 1, 3).c_str(), nullptr, 8)));
      i += 3;
    } else {
      out.push_back(field[i]);
    }
  }
  return out;
}

// The bdi of the mount at `path` ("0:41"), from mountinfo: no request to our own mount,
// which does not serve yet.
std::string bdiOf(const std::string& path) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  std::string found;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string id, parent, dev, root, point;
    if (!(fields >> id >> parent >> dev >> root >> point)) continue;
    if (unescape(point) == path) found = dev;  // the last one: mounts stack
  }
  return found;
}

bool writeFile(const std::string& path, const char* value) {
  std::ofstream out(path);
  out << value;
  out.flush();
  return static_cast<bool>(out);
}

}  // namespace

std::string relaxDirtyLimit(const std::string& mountpoint) {
  if (geteuid() != 0) return {};
  char real[PATH_MAX];
  if (!realpath(mountpoint.c_str(), real)) return {};
  const std::string bdi = bdiOf(real);
  if (bdi.empty()) return {};
  const std::string dir = "/sys/class/bdi/" + bdi;
  // strict_limit (Linux >= 6.2) first: without it, max_ratio alone lets the mount use more.
  const bool strict = writeFile(dir + "/strict_limit", "0");
  const bool ratio = writeFile(dir + "/max_ratio", "100");
  if (!strict && !ratio) return "dirty-page limit of bdi " + bdi + " left as the kernel set it (cannot write " + dir + ")";
  return "dirty-page limit of bdi " + bdi + " lifted (strict_limit " + (strict ? "0" : "unchanged") +
         ", max_ratio " + (ratio ? "100" : "unchanged") + "): shm/ writes share the global budget";
}

}  // namespace ipcfs::fs
