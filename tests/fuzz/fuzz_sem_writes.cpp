// Writes of arbitrary bytes to a semaphore (sem/NAME), mixed with waits (reads), non-blocking
// waits, interrupted waits and unlinking, against a model: a write posts N when it is "N"
// with optional surrounding white space, N a positive decimal; anything else is EINVAL, a
// value past SEM_VALUE_MAX is EOVERFLOW and changes nothing. A post wakes the
// longest-waiting readers first. The value is never above the maximum; at the end,
// shutdown() completes every parked wait exactly once.
#include <fuzzer/FuzzedDataProvider.h>

#include <fcntl.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_support.hpp"
#include "ipcfs/engine.hpp"
#include "ipcfs/inode.hpp"

using namespace ipcfs;
using namespace ipcfs::fuzz;

namespace {

constexpr Caller kUser{.pid = 100, .uid = 1000, .gid = 1000};

bool isSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'; }

// What a write of `text` posts, or the errno it must fail with (given the current value).
struct Post {
  int err = 0;
  uint64_t n = 0;
};

Post parsePost(std::string_view text, uint64_t value) {
  while (!text.empty() && isSpace(text.front())) text.remove_prefix(1);
  while (!text.empty() && isSpace(text.back())) text.remove_suffix(1);
  if (text.empty()) return {EINVAL};
  bool overflow = false;
  uint64_t n = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return {EINVAL};
    const auto d = static_cast<uint64_t>(c - '0');
    if (n > (UINT64_MAX - d) / 10) overflow = true;
    if (!overflow) n = n * 10 + d;
  }
  if (overflow) return {EOVERFLOW};
  if (n == 0) return {EINVAL};
  if (n > kSemValueMax || value > kSemValueMax - n) return {EOVERFLOW};
  return {0, n};
}

// Arbitrary bytes, or a number near the interesting edges with white space around it.
std::string postText(FuzzedDataProvider& in, uint64_t value) {
  if (in.ConsumeBool()) return in.ConsumeRandomLengthString(40);
  uint64_t n = 0;
  switch (in.ConsumeIntegralInRange<int>(0, 3)) {
    case 0: n = in.ConsumeIntegralInRange<uint64_t>(0, 4); break;
    case 1: n = kSemValueMax - value - in.ConsumeIntegralInRange<uint64_t>(0, 2) + 1; break;
    case 2: n = UINT64_MAX - in.ConsumeIntegralInRange<uint64_t>(0, 2); break;
    default: n = in.ConsumeIntegral<uint64_t>(); break;
  }
  const std::string pad = " \t\n\v\f\r";
  std::string text;
  for (int i = in.ConsumeIntegralInRange<int>(0, 2); i > 0; --i) text += pad[in.ConsumeIntegralInRange<size_t>(0, 5)];
  text += (in.ConsumeBool() ? "0" : "") + std::to_string(n);
  for (int i = in.ConsumeIntegralInRange<int>(0, 2); i > 0; --i) text += pad[in.ConsumeIntegralInRange<size_t>(0, 5)];
  return text;
}

struct Wait {
  size_t entry;  // in the ledger
  WaiterId id;
  size_t size;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  Engine engine({}, everyoneLives());
  auto made = engine.create(ino::kSem, "s", 0644, O_RDWR | O_CREAT | O_EXCL, kUser);
  FUZZ_CHECK(made, "create sem/s failed");
  const uint64_t semIno = made->first.st_ino;
  const uint64_t writer = made->second.fh;
  std::vector<uint64_t> handles = {writer};

  Ledger ledger;
  std::deque<Wait> waiting;  // longest-waiting first
  uint64_t value = 0;

  // A read of `fh`: one wait, completed at once or parked.
  auto read = [&](uint64_t fh, size_t readSize, bool nonblock) {
    const size_t entry = ledger.open();
    auto parked = engine.read(fh, readSize, 0, nonblock, kUser.pid, ledger.read(entry));
    FUZZ_CHECK(parked.has_value() != ledger.done(entry), "a read both parked and completed, or neither");
    if (parked) {
      FUZZ_CHECK(!nonblock && value == 0, "a read parked with value " + std::to_string(value));
      waiting.push_back({entry, *parked, readSize});
      return;
    }
    if (value > 0) {
      --value;
      const std::string want = (std::to_string(value) + "\n").substr(0, readSize);
      FUZZ_CHECK(ledger[entry].err == 0 && ledger[entry].data == want,
                 "a wait returned " + quoted(ledger[entry].data) + " (errno " + std::to_string(ledger[entry].err) +
                     "), expected " + quoted(want));
    } else {
      FUZZ_CHECK(nonblock && ledger[entry].err == EAGAIN, "a wait on 0 did not park nor fail with EAGAIN");
    }
  };

  for (int step = 0; step < 200 && in.remaining_bytes() > 0; ++step) {
    switch (in.ConsumeIntegralInRange<int>(0, 7)) {
      case 0:
      case 1:
      case 2: {  // a post
        const std::string text = postText(in, value);
        const Post want = parsePost(text, value);
        int err = -1;
        size_t written = 0;
        auto parked = engine.write(writer, text, 0, in.ConsumeBool(), kUser, [&](Result<size_t> r) {
          err = errnoOf(r);
          if (r) written = *r;
        });
        FUZZ_CHECK(!parked && err != -1, "a write of a semaphore did not complete at once");
        FUZZ_CHECK(err == want.err, "write " + quoted(text) + " at value " + std::to_string(value) + ": errno " +
                                        std::to_string(err) + ", expected " + std::to_string(want.err));
        if (err != 0) break;
        FUZZ_CHECK(written == text.size(), "a post wrote " + std::to_string(written) + " of " +
                                               std::to_string(text.size()) + " bytes");
        value += want.n;
        while (value > 0 && !waiting.empty()) {  // the longest-waiting readers are served first
          const Wait w = waiting.front();
          waiting.pop_front();
          --value;
          const std::string got = ledger[w.entry].data;
          const std::string expected = (std::to_string(value) + "\n").substr(0, w.size);
          FUZZ_CHECK(ledger.done(w.entry) && ledger[w.entry].err == 0 && got == expected,
                     "a woken wait returned " + quoted(got) + ", expected " + quoted(expected));
        }
        for (const Wait& w : waiting) FUZZ_CHECK(!ledger.done(w.entry), "a wait completed out of turn");
        break;
      }
      case 3:
      case 4: {  // a wait (`cat sem/s`) on a file of its own, blocking or not
        auto opened = engine.open(semIno, O_RDONLY, kUser);
        FUZZ_CHECK(opened, "open sem/s failed");
        handles.push_back(opened->fh);
        read(opened->fh, in.ConsumeIntegralInRange<size_t>(1, 16), in.ConsumeBool());
        break;
      }
      case 5: {  // a wait interrupted by a signal
        if (waiting.empty()) break;
        const size_t i = in.ConsumeIntegralInRange<size_t>(0, waiting.size() - 1);
        engine.cancel(waiting[i].id);
        FUZZ_CHECK(ledger.done(waiting[i].entry) && ledger[waiting[i].entry].err == EINTR,
                   "an interrupted wait did not end with EINTR");
        waiting.erase(waiting.begin() + static_cast<ptrdiff_t>(i));
        break;
      }
      case 6: {  // a read past offset 0 (the second read of `cat`) ends the file, takes nothing
        const size_t entry = ledger.open();
        auto parked = engine.read(writer, 16, 1, false, kUser.pid, ledger.read(entry));
        FUZZ_CHECK(!parked && ledger[entry].err == 0 && ledger[entry].data.empty(), "a read at offset 1 did not end");
        break;
      }
      default: {  // unlinked: open files keep working on it
        (void)engine.unlink(ino::kSem, "s");
        break;
      }
    }
    FUZZ_CHECK(value <= kSemValueMax, "value above SEM_VALUE_MAX");
    FUZZ_CHECK(ledger.pending() == waiting.size(),
               std::to_string(ledger.pending()) + " completions owed, " + std::to_string(waiting.size()) + " waits");
    auto shown = engine.getxattr(semIno, "user.ipc.value");
    FUZZ_CHECK(shown && *shown == std::to_string(value),
               "user.ipc.value " + (shown ? *shown : "(errno)") + ", expected " + std::to_string(value));
    const StatusFields status = parseStatus(engine.rootStatus());
    FUZZ_CHECK(counter(status, "receivers_waiting") == waiting.size(), "receivers_waiting differs from the waits");
  }

  engine.shutdown();
  for (const Wait& w : waiting)
    FUZZ_CHECK(ledger[w.entry].err == ESHUTDOWN, "shutdown ended a wait with errno " +
                                                     std::to_string(ledger[w.entry].err));
  FUZZ_CHECK(ledger.pending() == 0, "shutdown left waits uncompleted");
  for (uint64_t fh : handles) engine.release(fh);
  return 0;
}
