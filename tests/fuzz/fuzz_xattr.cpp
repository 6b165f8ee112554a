// setxattr of user.ipc.capacity, user.ipc.policy and user.ipc.max_msg_size with arbitrary
// values, checked against the contract: a value is accepted exactly when it is a valid one
// (a decimal number, `unlimited` for the capacity, a policy name; optionally followed by one
// newline), an accepted one reads back in canonical form (getxattr and `.status` agree), a
// rejected one (EINVAL) changes nothing. Other names and other nodes refuse and change
// nothing; a max_msg_size is enforced on the next write.
#include <fuzzer/FuzzedDataProvider.h>

#include <fcntl.h>

#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "fuzz_support.hpp"
#include "ipcfs/engine.hpp"
#include "ipcfs/inode.hpp"

using namespace ipcfs;
using namespace ipcfs::fuzz;

namespace {

constexpr Caller kUser{.pid = 100, .uid = 1000, .gid = 1000};
constexpr std::array<std::string_view, 4> kSettable = {"user.ipc.capacity", "user.ipc.policy",
                                                       "user.ipc.max_msg_size", "user.ipc.id"};
// Names that are not settable: read-only (EPERM) or unknown (ENOTSUP).
constexpr std::array<std::string_view, 5> kOtherNames = {"user.ipc.seq", "user.ipc.value", "user.ipc.capacityx",
                                                         "trusted.ipc.capacity", "user.ipc.policy\n"};

// A non-empty run of decimal digits that fits 64 bits.
std::optional<uint64_t> decimal(std::string_view v) {
  if (v.empty()) return std::nullopt;
  uint64_t n = 0;
  for (char c : v) {
    if (c < '0' || c > '9') return std::nullopt;
    const auto d = static_cast<uint64_t>(c - '0');
    if (n > (UINT64_MAX - d) / 10) return std::nullopt;
    n = n * 10 + d;
  }
  return n;
}

// What getxattr must return after setting `value` (nullopt: EINVAL expected).
std::optional<std::string> canonical(std::string_view attr, std::string_view value) {
  if (!value.empty() && value.back() == '\n') value.remove_suffix(1);
  if (attr == "user.ipc.policy") {
    if (value == "any" || value == "exclusive" || value == "pair") return std::string(value);
    return std::nullopt;
  }
  if (attr == "user.ipc.capacity" && value == "unlimited") return std::string(value);
  auto n = decimal(value);
  if (!n) return std::nullopt;
  if (attr == "user.ipc.capacity" && *n == UINT64_MAX) return std::nullopt;  // that is `unlimited`
  if (attr == "user.ipc.max_msg_size" && *n > kMaxMaxMsgSize) return std::nullopt;
  return std::to_string(*n);
}

struct Settings {
  std::string id, capacity, policy, maxMsgSize;
  bool operator==(const Settings&) const = default;
  std::string text() const { return id + "/" + capacity + "/" + policy + "/" + maxMsgSize; }
};

std::string get(Engine& engine, uint64_t ino, std::string_view attr) {
  auto v = engine.getxattr(ino, attr);
  FUZZ_CHECK(v, "getxattr " + std::string(attr) + " failed: errno " + std::to_string(errnoOf(v)));
  return *v;
}

// The settings as getxattr shows them, checked against the mailbox's `.status`.
Settings settings(Engine& engine, uint64_t box) {
  Settings s{get(engine, box, "user.ipc.id"), get(engine, box, "user.ipc.capacity"),
             get(engine, box, "user.ipc.policy"), get(engine, box, "user.ipc.max_msg_size")};
  const uint64_t statusIno = ino::make(ino::Kind::Status, ino::idOf(box));
  auto opened = engine.open(statusIno, O_RDONLY, kUser);
  FUZZ_CHECK(opened, "open .status failed");
  std::string text;
  engine.read(opened->fh, 1 << 16, 0, true, kUser.pid, [&](Result<Bytes> r) {
    FUZZ_CHECK(r, "read .status failed");
    text.assign(r->view);
  });
  engine.release(opened->fh);
  auto st = engine.getattr(statusIno);
  FUZZ_CHECK(st && static_cast<size_t>(st->st_size) == text.size(), ".status size differs from its text");
  const StatusFields fields = parseStatus(text);
  const Settings shown{fields.at("id"), fields.at("capacity"), fields.at("policy"), fields.at("max_msg_size")};
  FUZZ_CHECK(shown == s, "getxattr says " + s.text() + ", .status says " + shown.text());
  return s;
}

// A message of max_msg_size bytes is accepted by a write, one byte more is EFBIG.
void checkMaxMsgSizeEnforced(Engine& engine, uint64_t box, uint64_t max) {
  auto opened = engine.open(ino::make(ino::Kind::Send, ino::idOf(box)), O_WRONLY, kUser);
  FUZZ_CHECK(opened, "open .send failed");
  const std::string payload(max + 1, 'x');
  auto write = [&](std::string_view data) {
    int err = -1;
    auto parked = engine.write(opened->fh, data, 0, false, kUser, [&](Result<size_t> r) { err = errnoOf(r); });
    FUZZ_CHECK(!parked && err != -1, "a write of .send did not complete at once");
    return err;
  };
  FUZZ_CHECK(write(payload) == EFBIG, "a message longer than max_msg_size " + std::to_string(max) + " was accepted");
  if (max > 0) FUZZ_CHECK(write(std::string_view(payload).substr(1)) == 0, "a message of max_msg_size was refused");
  engine.release(opened->fh);  // delivers it (or discards it, the mailbox being full): never waits
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  Engine engine({}, everyoneLives());
  auto box = engine.mkdir(ino::kMailboxes, "m", 0755, kUser);
  FUZZ_CHECK(box, "mkdir failed");
  // Other nodes, whose xattrs are read-only.
  auto sem = engine.create(ino::kSem, "s", 0644, O_RDWR | O_CREAT, kUser);
  FUZZ_CHECK(sem, "create sem/s failed");
  engine.release(sem->second.fh);
  auto dropIn = engine.create(box->st_ino, "note", 0644, O_WRONLY | O_CREAT, kUser);
  FUZZ_CHECK(dropIn, "create a message failed");
  engine.release(dropIn->second.fh);
  const uint64_t nodes[] = {sem->first.st_ino, dropIn->first.st_ino, ino::kRoot, ino::kMailboxes};

  for (int step = 0; step < 64 && in.remaining_bytes() > 0; ++step) {
    const auto choice = in.ConsumeIntegralInRange<uint8_t>(0, 15);
    std::string attr;
    if (choice < 4) {
      attr = kSettable[choice];
    } else if (choice < 9) {
      attr = kOtherNames[choice - 4];
    } else if (choice == 9) {
      attr = in.ConsumeRandomLengthString(32);
    } else {
      attr = kSettable[choice % 3];
    }
    const std::string value = in.ConsumeRandomLengthString(48);
    const Settings before = settings(engine, box->st_ino);

    if (in.ConsumeBool() && in.ConsumeBool()) {
      // Another node, or a removexattr: refused, and nothing changes.
      const uint64_t node = nodes[in.ConsumeIntegralInRange<size_t>(0, std::size(nodes) - 1)];
      const bool remove = in.ConsumeBool();
      const uint64_t target = remove ? box->st_ino : node;
      const int err = errnoOf(remove ? engine.removexattr(target, attr) : engine.setxattr(target, attr, value));
      FUZZ_CHECK(err == EPERM || err == ENOTSUP || err == ENODATA,
                 std::string(remove ? "removexattr " : "setxattr on a read-only node ") + quoted(attr) + ": errno " +
                     std::to_string(err));
      FUZZ_CHECK(settings(engine, box->st_ino) == before, "a refused xattr call changed the mailbox");
      continue;
    }

    const int err = errnoOf(engine.setxattr(box->st_ino, attr, value));
    const Settings after = settings(engine, box->st_ino);
    const bool settable = attr == kSettable[0] || attr == kSettable[1] || attr == kSettable[2];
    if (!settable) {
      const int want = attr == "user.ipc.id" ? EPERM : ENOTSUP;
      FUZZ_CHECK(err == want, "setxattr " + quoted(attr) + ": errno " + std::to_string(err) + ", expected " +
                                  std::to_string(want));
      FUZZ_CHECK(after == before, "a refused setxattr " + quoted(attr) + " changed " + before.text() + " to " +
                                      after.text());
      continue;
    }
    const auto want = canonical(attr, value);
    if (!want) {
      FUZZ_CHECK(err == EINVAL, "setxattr " + attr + "=" + quoted(value) + ": errno " + std::to_string(err) +
                                    ", expected EINVAL");
      FUZZ_CHECK(after == before, "a rejected setxattr " + attr + "=" + quoted(value) + " changed " + before.text() +
                                      " to " + after.text());
      continue;
    }
    FUZZ_CHECK(err == 0, "setxattr " + attr + "=" + quoted(value) + " refused: errno " + std::to_string(err));
    Settings expected = before;
    if (attr == "user.ipc.capacity") expected.capacity = *want;
    if (attr == "user.ipc.policy") expected.policy = *want;
    if (attr == "user.ipc.max_msg_size") expected.maxMsgSize = *want;
    FUZZ_CHECK(after == expected, "setxattr " + attr + "=" + quoted(value) + " reads back as " + after.text() +
                                      ", expected " + expected.text());
    // The canonical form is itself accepted and changes nothing more.
    FUZZ_CHECK(engine.setxattr(box->st_ino, attr, *want), "the canonical " + quoted(*want) + " is refused");
    FUZZ_CHECK(settings(engine, box->st_ino) == expected, "setting the canonical form changed the settings");
    if (attr == "user.ipc.max_msg_size" && std::stoull(*want) <= 4096)
      checkMaxMsgSizeEnforced(engine, box->st_ino, std::stoull(*want));
  }
  return 0;
}
