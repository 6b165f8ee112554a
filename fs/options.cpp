#include "options.hpp"

#include <charconv>
#include <filesystem>
#include <optional>

namespace ipcfs::fs {

const char* const kUsage =
    "usage: ipcfs [options] MOUNTPOINT\n"
    "\n"
    "Mounts the IPC objects of this machine as files: mailboxes/, procs/, pipes/, shm/, sem/.\n"
    "Goes to the background once the mount is ready.\n"
    "\n"
    "options:\n"
    "  -f                     stay in the foreground (logs to stderr)\n"
    "  -d                     foreground with FUSE request debugging\n"
    "  -s                     single-threaded\n"
    "  -o OPT[,OPT...]        mount options:\n"
    "       max_bytes=N           bound on all message bytes held (K, M, G, T suffixes); past it, ENOSPC\n"
    "       max_msg_size=N        default user.ipc.max_msg_size of new mailboxes (default 1M)\n"
    "       state_dir=DIR         durable mode: keep mailboxes, messages, semaphores, shm/ and\n"
    "                             pipes/ nodes in DIR across restarts and crashes\n"
    "       journal_size=N        with state_dir: journal size that triggers a snapshot (default 64M)\n"
    "       backend=redis://HOST:PORT[,HOST:PORT...]\n"
    "                             share mailboxes/ and sem/ with every ipcfs on the same Redis\n"
    "                             (several addresses: the seeds of a Redis Cluster)\n"
    "       backend_timeout=MS    a backend operation fails with EIO after this (default 1000)\n"
    "       backend_lease=MS      a message held by a daemon that died is delivered again\n"
    "                             after this (default 5000)\n"
    "       allow_other, auto_unmount, ... (FUSE options; default_permissions is always\n"
    "       on, and allow_other too as root)\n"
    "  --state-dir DIR        the same as -o state_dir=DIR\n"
    "  --backend URL          the same as -o backend=URL\n"
    "  --log-level LEVEL      trace, debug, info, warn, error, off (default info)\n"
    "  -h, --help             this text\n"
    "  -V, --version          version\n";

std::expected<uint64_t, std::string> parseSize(std::string_view text) {
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || end == text.data()) return std::unexpected("not a size: '" + std::string(text) + "'");
  std::string_view suffix(end, static_cast<size_t>(text.data() + text.size() - end));
  unsigned shift = 0;
  if (suffix == "K" || suffix == "k") shift = 10;
  else if (suffix == "M") shift = 20;
  else if (suffix == "G") shift = 30;
  else if (suffix == "T") shift = 40;
  else if (!suffix.empty()) return std::unexpected("not a size: '" + std::string(text) + "'");
  if (shift && value > (UINT64_MAX >> shift)) return std::unexpected("size too large: '" + std::string(text) + "'");
  return value << shift;
}

namespace {

std::optional<spdlog::level::level_enum> parseLevel(std::string_view s) {
  if (s == "trace") return spdlog::level::trace;
  if (s == "debug") return spdlog::level::debug;
  if (s == "info") return spdlog::level::info;
  if (s == "warn") return spdlog::level::warn;
  if (s == "error") return spdlog::level::err;
  if (s == "off") return spdlog::level::off;
  return std::nullopt;
}

std::expected<std::string, std::string> stateDirPath(std::string_view dir) {
  if (dir.empty()) return std::unexpected("state_dir: no directory given");
  std::error_code ec;
  auto path = std::filesystem::absolute(std::filesystem::path(dir), ec);
  if (ec) return std::unexpected("state_dir '" + std::string(dir) + "': " + ec.message());
  return path.lexically_normal().string();
}

// `--name VALUE` or `--name=VALUE` at argv[i] (i moves past VALUE): nullopt if argv[i] is
// another option, an empty inner optional if VALUE is missing.
std::optional<std::optional<std::string_view>> longOption(int argc, char** argv, int& i, std::string_view name) {
  const std::string_view a = argv[i];
  if (a == name) {
    if (i + 1 >= argc) return std::optional<std::string_view>{};
    return std::optional<std::string_view>(argv[++i]);
  }
  if (a.size() > name.size() && a.starts_with(name) && a[name.size()] == '=')
    return std::optional<std::string_view>(a.substr(name.size() + 1));
  return std::nullopt;
}

// Takes ipcfs's own keys out of one -o list; returns what is left for FUSE.
std::expected<std::string, std::string> takeOwnMountOptions(std::string_view list, DaemonOptions& out) {
  std::string rest;
  while (!list.empty()) {
    const size_t comma = list.find(',');
    std::string_view opt = list.substr(0, comma);
    list = comma == std::string_view::npos ? std::string_view{} : list.substr(comma + 1);
    if (opt.starts_with("max_bytes=")) {
      auto v = parseSize(opt.substr(10));
      if (!v) return std::unexpected("max_bytes: " + v.error());
      out.limits.maxBytes = *v;
    } else if (opt.starts_with("max_msg_size=")) {
      auto v = parseSize(opt.substr(13));
      if (!v || *v > kMaxMaxMsgSize) return std::unexpected("max_msg_size: bad value '" + std::string(opt.substr(13)) + "'");
      out.limits.defaultMaxMsgSize = *v;
    } else if (opt.starts_with("state_dir=")) {
      auto dir = stateDirPath(opt.substr(10));
      if (!dir) return std::unexpected(dir.error());
      out.stateDir = *dir;
    } else if (opt.starts_with("journal_size=")) {
      auto v = parseSize(opt.substr(13));
      if (!v || *v == 0) return std::unexpected("journal_size: bad value '" + std::string(opt.substr(13)) + "'");
      out.journalSize = *v;
    } else if (opt.starts_with("backend=")) {
      out.backend = std::string(opt.substr(8));
      if (out.backend.empty()) return std::unexpected("backend: no address given");
      // A cluster's seeds are separated by commas, like -o options: the HOST:PORT items
      // that follow (no '=' in them) belong to the address.
      while (!list.empty()) {
        const std::string_view next = list.substr(0, list.find(','));
        if (next.find('=') != std::string_view::npos || next.find(':') == std::string_view::npos) break;
        out.backend += ',';
        out.backend += next;
        list = next.size() == list.size() ? std::string_view{} : list.substr(next.size() + 1);
      }
    } else if (opt.starts_with("backend_timeout=") || opt.starts_with("backend_lease=")) {
      const bool timeout = opt.starts_with("backend_timeout=");
      std::string_view v = opt.substr(opt.find('=') + 1);
      uint32_t ms = 0;
      auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), ms);
      if (ec != std::errc{} || end != v.data() + v.size() || ms < 50 || ms > 3600000)
        return std::unexpected(std::string(timeout ? "backend_timeout" : "backend_lease") + ": bad value '" +
                               std::string(v) + "' (milliseconds, 50 to 3600000)");
      (timeout ? out.backendTimeoutMs : out.backendLeaseMs) = ms;
    } else if (!opt.empty()) {
      if (!rest.empty()) rest += ',';
      rest += opt;
    }
  }
  return rest;
}

}  // namespace

std::expected<DaemonOptions, std::string> parseDaemonOptions(int argc, char** argv) {
  DaemonOptions out;
  out.fuseArgs.emplace_back(argc > 0 ? argv[0] : "ipcfs");
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "-h" || a == "--help") {
      out.help = true;
    } else if (a == "-V" || a == "--version") {
      out.version = true;
    } else if (auto level = longOption(argc, argv, i, "--log-level")) {
      if (!*level) return std::unexpected("--log-level needs a value (trace, debug, info, warn, error, off)");
      auto parsed = parseLevel(**level);
      if (!parsed) return std::unexpected("unknown log level '" + std::string(**level) + "' (trace, debug, info, warn, error, off)");
      out.logLevel = *parsed;
    } else if (auto v = longOption(argc, argv, i, "--state-dir")) {
      if (!*v) return std::unexpected("--state-dir needs a directory");
      auto dir = stateDirPath(**v);
      if (!dir) return std::unexpected(dir.error());
      out.stateDir = *dir;
    } else if (auto address = longOption(argc, argv, i, "--backend")) {
      if (!*address || (*address)->empty()) return std::unexpected("--backend needs an address (redis://HOST:PORT)");
      out.backend = std::string(**address);
    } else if (a == "-o" || (a.starts_with("-o") && a.size() > 2)) {
      std::string_view list;
      if (a == "-o") {
        if (i + 1 >= argc) return std::unexpected("-o needs a value");
        list = argv[++i];
      } else {
        list = a.substr(2);
      }
      auto rest = takeOwnMountOptions(list, out);
      if (!rest) return std::unexpected(rest.error());
      if (!rest->empty()) {
        out.fuseArgs.emplace_back("-o");
        out.fuseArgs.push_back(*rest);
      }
    } else if (a == "-f" || a == "-d" || a == "-s" || a == "--debug") {
      out.fuseArgs.emplace_back(a);
    } else if (!a.starts_with("-")) {
      if (!out.mountpoint.empty()) return std::unexpected("one mountpoint only, got '" + out.mountpoint + "' and '" + std::string(a) + "'");
      out.mountpoint = a;
      out.fuseArgs.emplace_back(a);
    } else {
      return std::unexpected("unknown option '" + std::string(a) + "' (try --help)");
    }
  }
  if (!out.backend.empty() && !out.stateDir.empty())
    return std::unexpected("backend and state_dir do not go together: with a backend, Redis keeps the state");
  return out;
}

}  // namespace ipcfs::fs
