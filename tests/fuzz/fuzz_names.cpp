// validateName on arbitrary bytes, against its contract: a name is 1-255 bytes, no '/', no
// NUL, not starting with '.' (ENAMETOOLONG beyond 255 bytes, EINVAL otherwise). Then the
// same bytes as the name of every kind of object a user names: the engine accepts exactly
// the valid names, and an accepted one lists, resolves and renames back as itself.
#include <fcntl.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fuzz_support.hpp"
#include "ipcfs/engine.hpp"
#include "ipcfs/inode.hpp"
#include "names.hpp"

using namespace ipcfs;
using namespace ipcfs::fuzz;

namespace {

constexpr Caller kUser{.pid = 100, .uid = 1000, .gid = 1000};

int expectedErrno(std::string_view name) {
  if (name.size() > 255) return ENAMETOOLONG;
  if (name.empty() || name.find('/') != std::string_view::npos || name.find('\0') != std::string_view::npos ||
      name.front() == '.')
    return EINVAL;
  return 0;
}

// How many times `dir` lists `name`; every listed entry must resolve by lookup to the inode
// it was listed with.
size_t countListed(Engine& engine, uint64_t dir, std::string_view name) {
  std::vector<std::pair<std::string, uint64_t>> listed;
  auto r = engine.readdir(dir, 0, [&](const DirEntry& e) {
    // (the engine is locked during readdir: look up afterwards)
    if (e.name != "." && e.name != "..") listed.emplace_back(e.name, e.attr.st_ino);
    return true;
  });
  FUZZ_CHECK(r, "readdir failed");
  size_t matches = 0;
  for (const auto& [entry, ino] : listed) {
    auto st = engine.lookup(dir, entry);
    FUZZ_CHECK(st && st->st_ino == ino, "listed entry does not resolve: " + quoted(entry));
    matches += entry == name;
  }
  return matches;
}

// mkdir/create of `name` in `parent` succeeded iff the name is valid; then it resolves and
// is listed `listed` times (a drop-in being written is not listed yet).
void checkMade(Engine& engine, uint64_t parent, std::string_view name, int got, const char* what,
               size_t listed = 1) {
  const int want = expectedErrno(name);
  FUZZ_CHECK(got == want, std::string(what) + " of " + quoted(name) + ": errno " + std::to_string(got) +
                              ", expected " + std::to_string(want));
  if (got != 0) return;
  FUZZ_CHECK(engine.lookup(parent, name), std::string(what) + ": made but does not resolve: " + quoted(name));
  FUZZ_CHECK(countListed(engine, parent, name) == listed,
             std::string(what) + ": not listed " + std::to_string(listed) + " times: " + quoted(name));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view name(reinterpret_cast<const char*>(data), size);

  const int want = expectedErrno(name);
  const int got = errnoOf(validateName(name));
  FUZZ_CHECK(got == want, "validateName(" + quoted(name) + "): errno " + std::to_string(got) + ", expected " +
                              std::to_string(want));
  FUZZ_CHECK(isReservedName(name) == (!name.empty() && name.front() == '.'), "isReservedName(" + quoted(name) + ")");
  if (size > 300) return 0;  // the engine part gains nothing from longer names

  Engine engine({}, everyoneLives());
  // A mailbox named `name`.
  auto box = engine.mkdir(ino::kMailboxes, name, 0755, kUser);
  checkMade(engine, ino::kMailboxes, name, errnoOf(box), "mkdir");
  // A message named `name` in a mailbox "m" (a drop-in file).
  auto m = engine.mkdir(ino::kMailboxes, "m", 0755, kUser);
  FUZZ_CHECK(m || name == "m", "mkdir m failed");
  const uint64_t mIno = m ? m->st_ino : box->st_ino;
  auto dropIn = engine.create(mIno, name, 0644, O_WRONLY | O_CREAT | O_EXCL, kUser);
  checkMade(engine, mIno, name, errnoOf(dropIn), "create in a mailbox", 0);
  if (dropIn) {
    // Delivered at its last close (as an empty message): then listed.
    engine.release(dropIn->second.fh);
    FUZZ_CHECK(countListed(engine, mIno, name) == 1, "delivered drop-in not listed: " + quoted(name));
  }
  // A semaphore and a shared-memory segment.
  for (uint64_t dir : {ino::kSem, ino::kShm}) {
    auto made = engine.create(dir, name, 0644, O_RDWR | O_CREAT | O_EXCL, kUser);
    checkMade(engine, dir, name, errnoOf(made), dir == ino::kSem ? "create in sem/" : "create in shm/");
    if (made) engine.release(made->second.fh);
  }
  // Renaming a mailbox to `name` and back.
  auto r = engine.mkdir(ino::kMailboxes, "r", 0755, kUser);
  if (r && name != "r" && name != "m") {
    auto renamed = engine.rename(ino::kMailboxes, "r", ino::kMailboxes, name, 0);
    const int expected = want != 0 ? want : (box ? EEXIST : 0);
    FUZZ_CHECK(errnoOf(renamed) == expected, "rename r to " + quoted(name) + ": errno " +
                                                 std::to_string(errnoOf(renamed)) + ", expected " +
                                                 std::to_string(expected));
    if (renamed) {
      auto st = engine.lookup(ino::kMailboxes, name);
      FUZZ_CHECK(st && st->st_ino == r->st_ino, "renamed mailbox does not resolve under " + quoted(name));
      FUZZ_CHECK(engine.rename(ino::kMailboxes, name, ino::kMailboxes, "r", 0), "rename back failed");
      FUZZ_CHECK(!engine.lookup(ino::kMailboxes, name), "old name still resolves: " + quoted(name));
    }
  }
  return 0;
}
