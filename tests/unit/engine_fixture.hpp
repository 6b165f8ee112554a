// Shared helpers for the engine tests: a fixture owning one Engine, shortcuts for sending and
// receiving through the control nodes, and a probe that records read completions.
#pragma once

#include <gtest/gtest.h>

#include <fcntl.h>

#include <algorithm>
#include <chrono>
#include <cerrno>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "ipcfs/engine.hpp"
#include "ipcfs/inode.hpp"

namespace ipcfs::test {

using namespace std::chrono_literals;

inline constexpr Caller kAlice{.pid = 4242, .uid = 1000, .gid = 1000};
inline constexpr size_t kBigRead = size_t{1} << 21;  // larger than any message in these tests

// The errno of a failed result, 0 on success: comparisons print as numbers, not bytes.
template <class T>
int errnoOf(const std::expected<T, std::errc>& r) {
  return r ? 0 : static_cast<int>(r.error());
}

// The text of a result, or "errno N" when it failed: comparisons print readably.
inline std::string textOf(const Result<std::string>& r) {
  return r ? *r : "errno " + std::to_string(static_cast<int>(r.error()));
}

inline uint64_t sendIno(uint64_t box) { return ino::make(ino::Kind::Send, ino::idOf(box)); }
inline uint64_t receiveIno(uint64_t box) { return ino::make(ino::Kind::Receive, ino::idOf(box)); }
inline uint64_t statusIno(uint64_t box) { return ino::make(ino::Kind::Status, ino::idOf(box)); }

// Records every completion handed to it; usable from any thread. Must outlive the reads it
// was handed to (or they must have completed).
class ReadProbe {
 public:
  ReadCompletion callback() {
    return [this](Result<Bytes> r) {
      std::lock_guard lock(mutex_);
      if (r) {
        results_.emplace_back(std::string(r->view));
      } else {
        results_.emplace_back(std::unexpected(r.error()));
      }
      threads_.push_back(std::this_thread::get_id());
      cv_.notify_all();
    };
  }

  size_t count() const {
    std::lock_guard lock(mutex_);
    return results_.size();
  }

  // Waits (with a deadline, never a fixed sleep) until `n` completions have arrived.
  bool waitForCount(size_t n, std::chrono::milliseconds timeout = 10s) const {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, timeout, [&] { return results_.size() >= n; });
  }

  Result<std::string> result(size_t i = 0) const {
    std::lock_guard lock(mutex_);
    if (i >= results_.size()) return std::unexpected(std::errc::no_message_available);
    return results_[i];
  }

  std::thread::id thread(size_t i = 0) const {
    std::lock_guard lock(mutex_);
    return i < threads_.size() ? threads_[i] : std::thread::id{};
  }

 private:
  mutable std::mutex mutex_;
  mutable std::condition_variable cv_;
  std::vector<Result<std::string>> results_;
  std::vector<std::thread::id> threads_;
};

// Shortcuts over one engine; failures are reported through gtest and yield neutral values.
class EngineClient {
 public:
  explicit EngineClient(Engine& engine) : engine_(engine) {}

  Engine& engine() { return engine_; }

  // Makes a mailbox and returns its inode number (0 on failure).
  uint64_t mkdir(std::string_view name, mode_t mode = 0755, const Caller& who = kAlice) {
    auto st = engine_.mkdir(ino::kMailboxes, name, mode, who);
    if (!st) {
      ADD_FAILURE() << "mkdir " << name << " failed: errno " << errnoOf(st);
      return 0;
    }
    return st->st_ino;
  }

  uint64_t openSend(uint64_t box, const Caller& who = kAlice) { return openOrFail(sendIno(box), O_WRONLY, who); }
  uint64_t openReceive(uint64_t box, const Caller& who = kAlice) {
    return openOrFail(receiveIno(box), O_RDONLY, who);
  }

  // The engine's file calls with the defaults these tests use. Calls that may block must
  // complete at once here; parking where no blocking is expected is a failure.
  Result<size_t> write(uint64_t fh, std::string_view data, off_t offset = 0, const Caller& who = kAlice) {
    std::optional<Result<size_t>> got;
    auto parked = engine_.write(fh, data, offset, false, who, [&](Result<size_t> r) { got.emplace(r); });
    if (parked) {
      ADD_FAILURE() << "write parked where it should have completed at once";
      engine_.cancel(*parked);
    }
    if (!got) return std::unexpected(std::errc::no_message_available);
    return *got;
  }

  Status flush(uint64_t fh) { return completeStatus(engine_.flush(fh, statusSink()), "flush"); }
  Status fsync(uint64_t fh) { return completeStatus(engine_.fsync(fh, statusSink()), "fsync"); }

  Result<std::pair<struct stat, Opened>> create(uint64_t box, std::string_view name, int flags = O_WRONLY | O_CREAT,
                                                const Caller& who = kAlice) {
    return engine_.create(box, name, 0644, flags, who);
  }

  // A read of `size` bytes by kAlice's process: completes at once or parks (see Engine::read).
  std::optional<WaiterId> read(uint64_t fh, size_t size, bool nonblock, ReadCompletion done) {
    return engine_.read(fh, size, 0, nonblock, kAlice.pid, std::move(done));
  }

  // echo -n TEXT > .send: open, write, close (flush then release).
  Status send(uint64_t box, std::string_view text, const Caller& who = kAlice) {
    auto opened = engine_.open(sendIno(box), O_WRONLY, who);
    if (!opened) return std::unexpected(opened.error());
    const uint64_t fh = opened->fh;
    if (auto w = write(fh, text, 0, who); !w) {
      engine_.release(fh);
      return std::unexpected(w.error());
    }
    auto f = flush(fh);
    engine_.release(fh);
    return f;
  }

  // A read that must complete before returning (nonblocking unless told otherwise).
  Result<std::string> readNow(uint64_t fh, size_t size = kBigRead, bool nonblock = true) {
    ReadProbe probe;
    auto parked = read(fh, size, nonblock, probe.callback());
    if (parked) {
      ADD_FAILURE() << "read parked (waiter " << *parked << ") where it should have completed at once";
      engine_.cancel(*parked);
    }
    if (probe.count() != 1) {
      ADD_FAILURE() << "read completed " << probe.count() << " times before returning, expected once";
      return std::unexpected(std::errc::no_message_available);
    }
    return probe.result();
  }

  // `cat .receive`: takes one message whole (reading until end of message) or fails.
  Result<std::string> receive(uint64_t box, size_t chunk = kBigRead) {
    const uint64_t fh = openReceive(box);
    if (fh == 0) return std::unexpected(std::errc::bad_file_descriptor);
    std::string out;
    for (int i = 0; i < 1'000'000; ++i) {
      auto r = readNow(fh, chunk);
      if (!r) {
        engine_.release(fh);
        return r;
      }
      if (r->empty()) break;
      out += *r;
    }
    engine_.release(fh);
    return out;
  }

  // Names readdir lists in a directory (without "." and ".."), sorted like ls: listing
  // order is not part of the contract.
  std::vector<std::string> list(uint64_t dir) {
    std::vector<std::string> names;
    auto r = engine_.readdir(dir, 0, [&](const DirEntry& e) {
      if (e.name != "." && e.name != "..") names.emplace_back(e.name);
      return true;
    });
    if (!r) ADD_FAILURE() << "readdir failed: errno " << errnoOf(r);
    std::sort(names.begin(), names.end());
    return names;
  }

  // The inode number of a named entry of a mailbox (0 if it does not resolve).
  uint64_t inoOf(uint64_t box, std::string_view name) {
    auto st = engine_.lookup(box, name);
    return st ? st->st_ino : 0;
  }

  std::string xattr(uint64_t ino, std::string_view name) { return textOf(engine_.getxattr(ino, name)); }

  // A value of the root `.status` ("key: value" lines); empty if the key is missing.
  std::string rootStatusValue(std::string_view key) {
    const std::string text = engine_.rootStatus();
    const std::string prefix = std::string(key) + ": ";
    size_t pos = 0;
    while (pos < text.size()) {
      const size_t end = text.find('\n', pos);
      const std::string_view line(text.data() + pos, (end == std::string::npos ? text.size() : end) - pos);
      if (line.starts_with(prefix)) return std::string(line.substr(prefix.size()));
      if (end == std::string::npos) break;
      pos = end + 1;
    }
    return {};
  }

 private:
  StatusCompletion statusSink() {
    lastStatus_.reset();
    return [this](Status s) { lastStatus_.emplace(s); };
  }

  Status completeStatus(std::optional<WaiterId> parked, const char* what) {
    if (parked) {
      ADD_FAILURE() << what << " parked (waiter " << *parked << ") where it should have completed at once";
      engine_.cancel(*parked);
    }
    if (!lastStatus_) {
      ADD_FAILURE() << what << " did not complete";
      return std::unexpected(std::errc::no_message_available);
    }
    return *lastStatus_;
  }

  uint64_t openOrFail(uint64_t ino, int flags, const Caller& who) {
    auto opened = engine_.open(ino, flags, who);
    if (!opened) {
      ADD_FAILURE() << "open of inode " << ino << " failed: errno " << errnoOf(opened);
      return 0;
    }
    return opened->fh;
  }

  Engine& engine_;
  std::optional<Status> lastStatus_;
};

// One engine with default limits and a client on it.
class EngineTest : public ::testing::Test {
 protected:
  Engine engine_;
  EngineClient client_{engine_};
};

}  // namespace ipcfs::test
