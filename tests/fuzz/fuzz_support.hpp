// Shared by the fuzz targets: a failed check aborts (libFuzzer then keeps the input), a
// process table in which every process lives (no /proc, so runs are reproducible), the
// parsing of `.status` texts and a ledger of completions that must each run exactly once.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

#include "ipcfs/engine.hpp"
#include "ipcfs/process_table.hpp"

namespace ipcfs::fuzz {

[[noreturn]] inline void failCheck(const char* file, int line, const char* cond, const std::string& detail) {
  std::fprintf(stderr, "%s:%d: check failed: %s\n  %s\n", file, line, cond, detail.c_str());
  std::abort();
}

// FUZZ_CHECK(condition, detail): `detail` (a std::string) is only built on failure.
#define FUZZ_CHECK(cond, detail)                                                   \
  do {                                                                             \
    if (!(cond)) ::ipcfs::fuzz::failCheck(__FILE__, __LINE__, #cond, (detail)); \
  } while (0)

// How .status writes a name: a backslash and a newline escaped C-style (one line per key).
inline std::string statusEscaped(std::string_view name) {
  std::string out;
  for (char c : name) out += c == '\\' ? std::string("\\\\") : c == '\n' ? std::string("\\n") : std::string(1, c);
  return out;
}

template <class T>
int errnoOf(const std::expected<T, std::errc>& r) {
  return r ? 0 : static_cast<int>(r.error());
}

// Printable bytes for failure messages: C escapes for everything but plain ASCII.
inline std::string quoted(std::string_view s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
      out.push_back(static_cast<char>(c));
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  return out + "\"";
}

// Every pid lives, as a child of pid 1, and its uids are root's.
class EveryoneLives final : public ProcessTable {
 public:
  std::optional<ProcessStat> stat(pid_t pid) const override {
    if (pid <= 0) return std::nullopt;
    return ProcessStat{.instance = static_cast<uint64_t>(pid), .parent = pid == 1 ? 0 : 1};
  }
  std::optional<ProcessCredentials> credentials(pid_t pid) const override {
    if (pid <= 0) return std::nullopt;
    return ProcessCredentials{};
  }
};

inline std::shared_ptr<ProcessTable> everyoneLives() { return std::make_shared<EveryoneLives>(); }

// A `.status` text: "key: value" lines, each ended by '\n'. The format is checked here.
using StatusFields = std::map<std::string, std::string, std::less<>>;

inline StatusFields parseStatus(std::string_view text) {
  StatusFields fields;
  FUZZ_CHECK(!text.empty() && text.back() == '\n', "status text does not end a line: " + quoted(text));
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t end = text.find('\n', pos);
    const std::string_view line = text.substr(pos, end - pos);
    const size_t colon = line.find(": ");
    FUZZ_CHECK(colon != std::string_view::npos && colon > 0, "status line without \"key: \": " + quoted(line));
    const bool fresh = fields.emplace(std::string(line.substr(0, colon)), std::string(line.substr(colon + 2))).second;
    FUZZ_CHECK(fresh, "status key twice: " + quoted(line));
    pos = end + 1;
  }
  return fields;
}

// A counter of a `.status`: decimal, and far below 2^63 (an unsigned counter that went
// below zero shows as a number near 2^64).
inline uint64_t counter(const StatusFields& fields, std::string_view key) {
  auto it = fields.find(key);
  FUZZ_CHECK(it != fields.end(), "status has no " + std::string(key));
  const std::string& v = it->second;
  uint64_t n = 0;
  bool digits = !v.empty() && v.size() <= 19;
  for (char c : v) {
    digits = digits && c >= '0' && c <= '9';
    if (digits) n = n * 10 + static_cast<uint64_t>(c - '0');
  }
  FUZZ_CHECK(digits && n < (uint64_t{1} << 62), std::string(key) + " is not a plausible count: " + quoted(v));
  return n;
}

// Completions handed to the engine, each of which must run exactly once: a second run
// fails at once; pending() are those still owed.
class Ledger {
 public:
  struct Entry {
    bool isRead = false;
    int calls = 0;
    int err = 0;  // of the (first) call; 0: success
    std::string data;  // what a read completion returned
  };

  size_t open(bool isRead = false) {
    entries_.push_back(std::make_shared<Entry>());
    entries_.back()->isRead = isRead;
    return entries_.size() - 1;
  }

  ReadCompletion read(size_t id) {
    return [e = entries_[id]](Result<Bytes> r) {
      note(*e, errnoOf(r));
      if (r) e->data.assign(r->view);
    };
  }
  WriteCompletion write(size_t id) {
    return [e = entries_[id]](Result<size_t> r) {
      note(*e, errnoOf(r));
      if (r) e->data = std::to_string(*r);
    };
  }
  StatusCompletion status(size_t id) {
    return [e = entries_[id]](Status r) { note(*e, errnoOf(r)); };
  }

  const Entry& operator[](size_t id) const { return *entries_[id]; }
  bool done(size_t id) const { return entries_[id]->calls > 0; }
  size_t size() const { return entries_.size(); }
  size_t pending() const {
    size_t n = 0;
    for (const auto& e : entries_) n += e->calls == 0;
    return n;
  }

 private:
  static void note(Entry& e, int err) {
    FUZZ_CHECK(e.calls == 0, "a completion ran twice (first errno " + std::to_string(e.err) + ", now " +
                                 std::to_string(err) + ")");
    ++e.calls;
    e.err = err;
  }

  // shared: a completion the engine still holds after the ledger is gone must not dangle.
  std::vector<std::shared_ptr<Entry>> entries_;
};

}  // namespace ipcfs::fuzz
