// ipcfs daemon: parse options, mount, go to the background, serve until unmounted or
// signalled, then answer every parked request and unmount cleanly.
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sys/stat.h>
#include <memory>
#include <optional>

#include "context.hpp"
#include "dirty_limit.hpp"
#include "ipcfs/backend.hpp"
#include "logging.hpp"
#include "options.hpp"
#include "process_reaper.hpp"
#include "shutdown_signals.hpp"

#ifndef IPCFS_VERSION
#define IPCFS_VERSION "0.0.0"
#endif

namespace {

int fail(const std::string& message) {
  std::fprintf(stderr, "ipcfs: %s\n", message.c_str());
  return 2;
}

struct ArgsOwner {
  fuse_args args = FUSE_ARGS_INIT(0, nullptr);
  ~ArgsOwner() { fuse_opt_free_args(&args); }
};

}  // namespace

int main(int argc, char** argv) {
  using namespace ipcfs::fs;
  auto parsed = parseDaemonOptions(argc, argv);
  if (!parsed) return fail(parsed.error());
  DaemonOptions& opts = *parsed;
  if (opts.help) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (opts.version) {
    std::printf("ipcfs %s (libfuse %s)\n", IPCFS_VERSION, fuse_pkgversion());
    return 0;
  }

  if (opts.mountpoint.empty()) return fail("no mountpoint given (try --help)");
  struct stat st{};
  if (::stat(opts.mountpoint.c_str(), &st) != 0)
    return fail("mountpoint '" + opts.mountpoint + "': " + std::strerror(errno));
  if (!S_ISDIR(st.st_mode)) return fail("mountpoint '" + opts.mountpoint + "': not a directory");

  ArgsOwner owner;
  for (const auto& a : opts.fuseArgs) fuse_opt_add_arg(&owner.args, a.c_str());
  // The kernel checks modes and owners against the attributes the daemon reports, always:
  // the daemon adds only the rules no mode expresses (procs/). Mounted by root, ipcfs serves
  // every user (like /dev/shm).
  fuse_opt_add_arg(&owner.args, "-o");
  fuse_opt_add_arg(&owner.args, geteuid() == 0 ? "allow_other,default_permissions" : "default_permissions");
  fuse_cmdline_opts cmd{};
  if (fuse_parse_cmdline(&owner.args, &cmd) != 0) return 2;  // libfuse has printed why
  std::unique_ptr<char, decltype(&std::free)> mountpoint(cmd.mountpoint, &std::free);
  if (!mountpoint) return fail("no mountpoint given (try --help)");

  opts.limits.ownerUid = getuid();
  opts.limits.ownerGid = getgid();
  auto filesystem = std::make_unique<Filesystem>(opts.limits);
  std::string stateNotes;
  if (!opts.stateDir.empty()) {
    // Loaded before mounting: a damaged state directory never gets a mount.
    ipcfs::StateDirOptions durable;
    durable.snapshotAfterBytes = opts.journalSize;
    durable.onFatal = [](const std::string& why) {
      spdlog::critical("{}", why);
      spdlog::shutdown();
    };
    auto loaded = filesystem->engine.openStateDir(opts.stateDir, std::move(durable));
    if (!loaded) return fail("state_dir: " + loaded.error());
    stateNotes = std::move(*loaded);
  }
  if (!opts.backend.empty()) {
    // Made before mounting: a malformed address never gets a mount. An unreachable server
    // is no reason not to mount: its objects fail with EIO until it is back.
    ipcfs::RedisOptions redis;
    redis.timeoutMs = opts.backendTimeoutMs;
    redis.leaseMs = opts.backendLeaseMs;
    auto backend = ipcfs::makeRedisBackend(opts.backend, redis);
    if (!backend) return fail(backend.error());
    filesystem->engine.useBackend(std::move(*backend));
    filesystem->sharedBackend = true;
  }
  const fuse_lowlevel_ops ops = makeOperations();
  fuse_session* se = fuse_session_new(&owner.args, &ops, sizeof ops, filesystem.get());
  if (!se) return 2;  // libfuse has printed the offending option
  filesystem->session = se;
  if (fuse_session_mount(se, mountpoint.get()) != 0) {
    fuse_session_destroy(se);
    return 1;  // libfuse has printed why
  }
  // From here SIGTERM, SIGINT and SIGHUP wait, blocked in every thread, for ShutdownSignals
  // (made below, after fuse_daemonize: a fork keeps only the forking thread).
  blockTerminationSignals();
  const std::string dirtyLimit = relaxDirtyLimit(mountpoint.get());
  const bool foreground = cmd.foreground || cmd.debug;
  if (fuse_daemonize(foreground) != 0) {
    fuse_session_unmount(se);
    fuse_session_destroy(se);
    return 1;
  }
  setupLogging(foreground, opts.logLevel);
  filesystem->log = spdlog::get("fs");
  spdlog::info("mounted on {} (pid {})", mountpoint.get(), getpid());
  if (!dirtyLimit.empty()) spdlog::info("{}", dirtyLimit);
  if (!opts.stateDir.empty()) {
    if (!stateNotes.empty()) spdlog::warn("{}", stateNotes);
    spdlog::info("durable: state in {}", opts.stateDir);
  }
  // Started after fuse_daemonize: a fork keeps only the forking thread.
  filesystem->engine.startJournal();
  if (!opts.backend.empty()) {
    spdlog::info("backend: mailboxes/ and sem/ shared through {}", opts.backend);
    filesystem->engine.startBackend();
  }
  std::optional<ProcessReaper> reaper;
  reaper.emplace(filesystem->engine);

  std::optional<ShutdownSignals> signals;
  signals.emplace(se);
  int ret = 0;
  if (cmd.singlethread) {
    ret = fuse_session_loop(se);
  } else {
    fuse_loop_config* cfg = fuse_loop_cfg_create();
    fuse_loop_cfg_set_clone_fd(cfg, static_cast<unsigned>(cmd.clone_fd));
    if (cmd.max_idle_threads <= 100000) fuse_loop_cfg_set_idle_threads(cfg, cmd.max_idle_threads);
    // libfuse reports "not given" as UINT_MAX; keep its own defaults then.
    if (cmd.max_threads > 0 && cmd.max_threads <= 100000) fuse_loop_cfg_set_max_threads(cfg, cmd.max_threads);
    ret = fuse_session_loop_mt(se, cfg);
    fuse_loop_cfg_destroy(cfg);
  }
  const int endedBy = signals->received();
  signals.reset();
  if (endedBy != 0) spdlog::info("ending on {}", strsignal(endedBy));
  // A signal or an unmount is a clean end; anything else is an error.
  const bool clean = ret == 0 || ret == -ENODEV;
  if (!clean) spdlog::error("session ended with error {}", ret);

  reaper.reset();
  filesystem->engine.shutdown();  // answers parked reads before the channel goes away
  filesystem->engine.closeStateDir();  // a final snapshot: the next start reads no journal
  filesystem->engine.stopBackend();    // what this daemon holds goes back at once
  fuse_session_unmount(se);
  fuse_session_destroy(se);
  spdlog::info("unmounted");
  spdlog::shutdown();
  return clean ? 0 : 1;
}
