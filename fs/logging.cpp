#include "logging.hpp"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/sinks/syslog_sink.h>
#include <spdlog/spdlog.h>
#include <syslog.h>

#include <cstdarg>
#include <cstdio>
#include <string>

#include "fuse.hpp"

namespace ipcfs::fs {

namespace {

spdlog::level::level_enum fromFuse(fuse_log_level level) {
  switch (level) {
    case FUSE_LOG_EMERG:
    case FUSE_LOG_ALERT:
    case FUSE_LOG_CRIT:
      return spdlog::level::critical;
    case FUSE_LOG_ERR:
      return spdlog::level::err;
    case FUSE_LOG_WARNING:
      return spdlog::level::warn;
    case FUSE_LOG_NOTICE:
    case FUSE_LOG_INFO:
      return spdlog::level::info;
    default:
      return spdlog::level::debug;
  }
}

void fuseLog(fuse_log_level level, const char* fmt, va_list ap) {
  char buf[1024];
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  std::string line(buf);
  while (!line.empty() && line.back() == '\n') line.pop_back();
  if (auto log = spdlog::get("fuse")) log->log(fromFuse(level), "{}", line);
}

}  // namespace

void setupLogging(bool foreground, spdlog::level::level_enum level) {
  spdlog::sink_ptr sink;
  if (foreground)
    sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  else
    sink = std::make_shared<spdlog::sinks::syslog_sink_mt>("ipcfs", LOG_PID, LOG_DAEMON, false);
  for (const char* name : {"daemon", "fs", "fuse"}) {
    auto logger = std::make_shared<spdlog::logger>(name, sink);
    logger->set_level(level);
    spdlog::register_logger(logger);
  }
  spdlog::set_default_logger(spdlog::get("daemon"));
  fuse_set_log_func(fuseLog);
}

}  // namespace ipcfs::fs
