// The namespace: making, finding, listing (with paging), renaming and removing mailboxes,
// and discarding or forwarding their messages.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <linux/fs.h>  // RENAME_NOREPLACE, RENAME_EXCHANGE

#include <algorithm>
#include <cerrno>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "engine_fixture.hpp"
#include "ipcfs/engine.hpp"
#include "ipcfs/inode.hpp"

namespace ipcfs::test {
namespace {

using NamespaceTest = EngineTest;

// Reads a directory in pages of at most `pageSize` entries, each page resuming at the
// `next` offset of the last entry taken, as the kernel does; `between` runs between pages.
std::vector<std::string> listInPages(Engine& engine, uint64_t dir, size_t pageSize,
                                     const std::function<void()>& between = {}) {
  std::vector<std::string> names;
  uint64_t offset = 0;
  for (int page = 0; page < 1'000'000; ++page) {
    size_t taken = 0;
    auto r = engine.readdir(dir, offset, [&](const DirEntry& e) {
      if (taken == pageSize) return false;  // buffer full: this entry is not taken
      ++taken;
      names.emplace_back(e.name);
      offset = e.next;
      return true;
    });
    if (!r) {
      ADD_FAILURE() << "readdir at offset " << offset << " failed: errno " << errnoOf(r);
      break;
    }
    if (taken == 0) break;
    if (between) between();
  }
  return names;
}

// --- making and finding mailboxes -----------------------------------------------------

TEST_F(NamespaceTest, MkdirMakesAMailboxThatResolvesAndIsListed) {
  const Caller bob{.pid = 9, .uid = 2001, .gid = 2002};
  auto st = engine_.mkdir(ino::kMailboxes, "orders", 0750, bob);
  ASSERT_TRUE(st);
  EXPECT_TRUE(S_ISDIR(st->st_mode));
  EXPECT_EQ(st->st_mode & 07777, 0750u);
  EXPECT_EQ(st->st_uid, 2001u);
  EXPECT_EQ(st->st_gid, 2002u);
  EXPECT_EQ(ino::kindOf(st->st_ino), ino::Kind::Mailbox);
  auto again = engine_.lookup(ino::kMailboxes, "orders");
  ASSERT_TRUE(again);
  EXPECT_EQ(again->st_ino, st->st_ino);
  client_.mkdir("invoices");
  EXPECT_EQ(client_.list(ino::kMailboxes), (std::vector<std::string>{"invoices", "orders"}));
}

TEST_F(NamespaceTest, MkdirOfAnExistingNameIsEEXIST) {
  client_.mkdir("a");
  EXPECT_EQ(errnoOf(engine_.mkdir(ino::kMailboxes, "a", 0755, kAlice)), EEXIST);
  EXPECT_EQ(client_.list(ino::kMailboxes).size(), 1u);
}

TEST_F(NamespaceTest, MkdirRefusesReservedAndMalformedNames) {
  EXPECT_EQ(errnoOf(engine_.mkdir(ino::kMailboxes, ".hidden", 0755, kAlice)), EINVAL);
  EXPECT_EQ(errnoOf(engine_.mkdir(ino::kMailboxes, ".send", 0755, kAlice)), EINVAL);
  EXPECT_EQ(errnoOf(engine_.mkdir(ino::kMailboxes, "", 0755, kAlice)), EINVAL);
  EXPECT_EQ(errnoOf(engine_.mkdir(ino::kMailboxes, "a/b", 0755, kAlice)), EINVAL);
  EXPECT_EQ(errnoOf(engine_.mkdir(ino::kMailboxes, std::string("a\0b", 3), 0755, kAlice)), EINVAL);
  EXPECT_EQ(errnoOf(engine_.mkdir(ino::kMailboxes, std::string(256, 'x'), 0755, kAlice)), ENAMETOOLONG);
  EXPECT_EQ(errnoOf(engine_.mkdir(ino::kMailboxes, std::string(255, 'x'), 0755, kAlice)), 0);
  EXPECT_EQ(client_.list(ino::kMailboxes).size(), 1u);
}

TEST_F(NamespaceTest, MkdirAtTheRootOrInsideAMailboxIsEPERM) {
  const uint64_t box = client_.mkdir("a");
  EXPECT_EQ(errnoOf(engine_.mkdir(ino::kRoot, "x", 0755, kAlice)), EPERM);
  EXPECT_EQ(errnoOf(engine_.mkdir(box, "nested", 0755, kAlice)), EPERM);
  EXPECT_TRUE(client_.list(box).empty());
}

TEST_F(NamespaceTest, MailboxIdsAreUniqueAndNeverReused) {
  const uint64_t first = client_.mkdir("a");
  ASSERT_EQ(errnoOf(engine_.rmdir(ino::kMailboxes, "a")), 0);
  const uint64_t second = client_.mkdir("a");
  EXPECT_NE(first, second);
  EXPECT_EQ(client_.xattr(second, "user.ipc.id"), std::to_string(ino::idOf(second)));
  EXPECT_EQ(errnoOf(engine_.getattr(first)), ENOENT);
  auto link = engine_.lookup(ino::kById, std::to_string(ino::idOf(second)));
  ASSERT_TRUE(link);
  EXPECT_TRUE(S_ISLNK(link->st_mode));
  EXPECT_EQ(textOf(engine_.readlink(link->st_ino)), "../mailboxes/a");
  EXPECT_EQ(errnoOf(engine_.lookup(ino::kById, std::to_string(ino::idOf(first)))), ENOENT);
}

TEST_F(NamespaceTest, RootListsTheTopLevelDirectoriesButNotItsStatus) {
  EXPECT_EQ(client_.list(ino::kRoot),
            (std::vector<std::string>{"by-id", "mailboxes", "pipes", "procs", "sem", "shm"}));
  auto status = engine_.lookup(ino::kRoot, ".status");
  ASSERT_TRUE(status);
  EXPECT_TRUE(S_ISREG(status->st_mode));
  auto mailboxes = engine_.lookup(ino::kRoot, "mailboxes");
  ASSERT_TRUE(mailboxes);
  EXPECT_EQ(mailboxes->st_mode & 07777, 01777u);
}

TEST_F(NamespaceTest, ControlNodesResolveButAreNotListed) {
  const uint64_t box = client_.mkdir("a");
  ASSERT_EQ(errnoOf(client_.send(box, "m")), 0);
  auto send = engine_.lookup(box, ".send");
  auto receive = engine_.lookup(box, ".receive");
  auto status = engine_.lookup(box, ".status");
  ASSERT_TRUE(send);
  ASSERT_TRUE(receive);
  ASSERT_TRUE(status);
  EXPECT_EQ(send->st_ino, sendIno(box));
  EXPECT_EQ(receive->st_ino, receiveIno(box));
  EXPECT_EQ(receive->st_size, 0) << "reading .receive takes: it must look empty";
  EXPECT_EQ(client_.list(box), std::vector<std::string>{"0000000001"});
  EXPECT_EQ(errnoOf(engine_.lookup(box, ".nothing")), ENOENT);
}

TEST_F(NamespaceTest, LookupOfMissingNamesIsENOENT) {
  const uint64_t box = client_.mkdir("a");
  EXPECT_EQ(errnoOf(engine_.lookup(ino::kMailboxes, "b")), ENOENT);
  EXPECT_EQ(errnoOf(engine_.lookup(box, "0000000001")), ENOENT);
  EXPECT_EQ(errnoOf(engine_.lookup(ino::kRoot, "nothing")), ENOENT);
}

TEST_F(NamespaceTest, ReaddirOfAFileIsENOTDIR) {
  const uint64_t box = client_.mkdir("a");
  ASSERT_EQ(errnoOf(client_.send(box, "m")), 0);
  auto r = engine_.readdir(client_.inoOf(box, "0000000001"), 0, [](const DirEntry&) { return true; });
  EXPECT_EQ(errnoOf(r), ENOTDIR);
}

// --- readdir paging -------------------------------------------------------------------

TEST_F(NamespaceTest, ReaddirPagingListsTenThousandMessagesEachExactlyOnce) {
  const uint64_t box = client_.mkdir("many");
  constexpr int kMessages = 10'000;
  const uint64_t tx = client_.openSend(box);
  for (int i = 0; i < kMessages; ++i) {
    ASSERT_EQ(errnoOf(client_.write(tx, "m", 0)), 0);
    ASSERT_EQ(errnoOf(client_.flush(tx)), 0);
  }
  engine_.release(tx);

  const auto names = listInPages(engine_, box, 97);
  ASSERT_EQ(names.size(), static_cast<size_t>(kMessages) + 2);
  EXPECT_EQ(names[0], ".");
  EXPECT_EQ(names[1], "..");
  std::set<std::string> unique(names.begin() + 2, names.end());
  EXPECT_EQ(unique.size(), static_cast<size_t>(kMessages)) << "some name was listed twice";
  for (int i = 1; i <= kMessages; ++i) {
    std::string expected = std::to_string(i);
    expected.insert(0, 10 - expected.size(), '0');
    EXPECT_TRUE(unique.contains(expected)) << expected << " was never listed";
  }
}

TEST_F(NamespaceTest, ReaddirPagingResumesAfterOneEntryPages) {
  const uint64_t box = client_.mkdir("a");
  for (int i = 0; i < 5; ++i) ASSERT_EQ(errnoOf(client_.send(box, "m")), 0);
  auto names = listInPages(engine_, box, 1);
  ASSERT_EQ(names.size(), 7u);
  EXPECT_EQ(names[0], ".");
  EXPECT_EQ(names[1], "..");
  std::sort(names.begin() + 2, names.end());
  EXPECT_EQ(names, (std::vector<std::string>{".", "..", "0000000001", "0000000002", "0000000003", "0000000004",
                                             "0000000005"}));
}

TEST_F(NamespaceTest, ReaddirPagingNeitherRepeatsNorSkipsWhenMessagesLeaveBetweenPages) {
  const uint64_t box = client_.mkdir("a");
  constexpr int kMessages = 300;
  for (int i = 0; i < kMessages; ++i) ASSERT_EQ(errnoOf(client_.send(box, "m")), 0);
  // Between pages a receiver takes the oldest message, already listed by then.
  const uint64_t rx = client_.openReceive(box);
  int taken = 0;
  const auto names = listInPages(engine_, box, 50, [&] {
    if (taken < 3) {
      EXPECT_EQ(textOf(client_.readNow(rx)), "m");
      EXPECT_EQ(textOf(client_.readNow(rx)), "");
      ++taken;
    }
  });
  engine_.release(rx);
  std::set<std::string> unique(names.begin() + 2, names.end());
  EXPECT_EQ(unique.size(), names.size() - 2) << "a name was listed twice";
  for (int i = 1; i <= kMessages; ++i) {
    std::string expected = std::to_string(i);
    expected.insert(0, 10 - expected.size(), '0');
    EXPECT_TRUE(unique.contains(expected)) << expected << " was skipped";
  }
}

TEST_F(NamespaceTest, ReaddirOfMailboxesPagesThroughEveryMailboxOnce) {
  for (int i = 0; i < 40; ++i) client_.mkdir("box" + std::to_string(i));
  const auto names = listInPages(engine_, ino::kMailboxes, 7);
  ASSERT_EQ(names.size(), 42u);
  std::set<std::string> unique(names.begin() + 2, names.end());
  EXPECT_EQ(unique.size(), 40u);
}

// --- rmdir ----------------------------------------------------------------------------

TEST_F(NamespaceTest, RmdirRemovesAnEmptyMailbox) {
  const uint64_t box = client_.mkdir("a");
  ASSERT_EQ(errnoOf(engine_.rmdir(ino::kMailboxes, "a")), 0);
  EXPECT_EQ(errnoOf(engine_.lookup(ino::kMailboxes, "a")), ENOENT);
  EXPECT_EQ(errnoOf(engine_.getattr(box)), ENOENT);
  EXPECT_TRUE(client_.list(ino::kMailboxes).empty());
  EXPECT_EQ(errnoOf(engine_.rmdir(ino::kMailboxes, "a")), ENOENT);
}

TEST_F(NamespaceTest, RmdirWithQueuedMessagesIsENOTEMPTYUntilTheyAreRemoved) {
  const uint64_t box = client_.mkdir("a");
  ASSERT_EQ(errnoOf(client_.send(box, "one")), 0);
  ASSERT_EQ(errnoOf(client_.send(box, "two")), 0);
  EXPECT_EQ(errnoOf(engine_.rmdir(ino::kMailboxes, "a")), ENOTEMPTY);
  EXPECT_EQ(client_.list(box).size(), 2u);
  // rm -r: the messages first, then the mailbox.
  for (const auto& name : client_.list(box)) ASSERT_EQ(errnoOf(engine_.unlink(box, name)), 0);
  EXPECT_EQ(errnoOf(engine_.rmdir(ino::kMailboxes, "a")), 0);
}

TEST_F(NamespaceTest, RmdirWithADropInBeingWrittenIsENOTEMPTY) {
  const uint64_t box = client_.mkdir("a");
  auto created = client_.create(box, "upload", O_WRONLY | O_CREAT);
  ASSERT_TRUE(created);
  ASSERT_EQ(errnoOf(client_.write(created->second.fh, "part", 0)), 0);
  EXPECT_EQ(errnoOf(engine_.rmdir(ino::kMailboxes, "a")), ENOTEMPTY);
  engine_.release(created->second.fh);
  EXPECT_EQ(textOf(client_.receive(box)), "part");
}

TEST_F(NamespaceTest, RmdirOutsideMailboxesIsRefused) {
  EXPECT_NE(errnoOf(engine_.rmdir(ino::kRoot, "mailboxes")), 0);
  EXPECT_TRUE(engine_.lookup(ino::kRoot, "mailboxes"));
}

TEST_F(NamespaceTest, SendingToARemovedMailboxThroughAnOpenFileFails) {
  const uint64_t box = client_.mkdir("a");
  const uint64_t tx = client_.openSend(box);
  ASSERT_EQ(errnoOf(engine_.rmdir(ino::kMailboxes, "a")), 0);
  EXPECT_NE(errnoOf(client_.write(tx, "lost?", 0)), 0);
  engine_.release(tx);
  EXPECT_EQ(client_.rootStatusValue("messages"), "0");
  EXPECT_EQ(client_.rootStatusValue("bytes_held"), "0");
}

// --- renaming mailboxes ---------------------------------------------------------------

TEST_F(NamespaceTest, RenamingAMailboxKeepsItsIdAndMessages) {
  const uint64_t box = client_.mkdir("old");
  ASSERT_EQ(errnoOf(client_.send(box, "kept")), 0);
  ASSERT_EQ(errnoOf(engine_.rename(ino::kMailboxes, "old", ino::kMailboxes, "new", 0)), 0);
  EXPECT_EQ(errnoOf(engine_.lookup(ino::kMailboxes, "old")), ENOENT);
  auto st = engine_.lookup(ino::kMailboxes, "new");
  ASSERT_TRUE(st);
  EXPECT_EQ(st->st_ino, box);
  EXPECT_EQ(client_.list(ino::kMailboxes), std::vector<std::string>{"new"});
  auto link = engine_.lookup(ino::kById, std::to_string(ino::idOf(box)));
  ASSERT_TRUE(link);
  EXPECT_EQ(textOf(engine_.readlink(link->st_ino)), "../mailboxes/new");
  EXPECT_EQ(textOf(client_.receive(box)), "kept");
  // The name is free again.
  EXPECT_NE(client_.mkdir("old"), 0u);
}

TEST_F(NamespaceTest, RenamingAMailboxOntoAnExistingOneIsEEXIST) {
  const uint64_t a = client_.mkdir("a");
  const uint64_t b = client_.mkdir("b");
  ASSERT_EQ(errnoOf(client_.send(b, "b's")), 0);
  EXPECT_EQ(errnoOf(engine_.rename(ino::kMailboxes, "a", ino::kMailboxes, "b", 0)), EEXIST);
  EXPECT_EQ(errnoOf(engine_.rename(ino::kMailboxes, "a", ino::kMailboxes, "b", RENAME_NOREPLACE)), EEXIST);
  EXPECT_EQ(client_.inoOf(ino::kMailboxes, "a"), a);
  EXPECT_EQ(client_.inoOf(ino::kMailboxes, "b"), b);
  EXPECT_EQ(textOf(client_.receive(b)), "b's");
}

TEST_F(NamespaceTest, RenamingAMailboxToABadNameIsRefused) {
  client_.mkdir("a");
  EXPECT_EQ(errnoOf(engine_.rename(ino::kMailboxes, "a", ino::kMailboxes, ".a", 0)), EINVAL);
  EXPECT_EQ(errnoOf(engine_.rename(ino::kMailboxes, "a", ino::kMailboxes, std::string(256, 'a'), 0)),
            ENAMETOOLONG);
  EXPECT_EQ(errnoOf(engine_.rename(ino::kMailboxes, "missing", ino::kMailboxes, "b", 0)), ENOENT);
  EXPECT_EQ(errnoOf(engine_.rename(ino::kMailboxes, "a", ino::kMailboxes, "b", RENAME_EXCHANGE)), EINVAL);
  EXPECT_EQ(client_.list(ino::kMailboxes), std::vector<std::string>{"a"});
}

// --- discarding and forwarding messages -----------------------------------------------

TEST_F(NamespaceTest, UnlinkDiscardsAQueuedMessage) {
  const uint64_t box = client_.mkdir("a");
  ASSERT_EQ(errnoOf(client_.send(box, "unwanted")), 0);
  ASSERT_EQ(errnoOf(client_.send(box, "wanted")), 0);
  const uint64_t msg = client_.inoOf(box, "0000000001");
  ASSERT_EQ(errnoOf(engine_.unlink(box, "0000000001")), 0);
  EXPECT_EQ(errnoOf(engine_.getattr(msg)), ENOENT);
  EXPECT_EQ(client_.list(box), std::vector<std::string>{"0000000002"});
  EXPECT_EQ(client_.rootStatusValue("discarded"), "1");
  EXPECT_EQ(textOf(client_.receive(box)), "wanted");
  EXPECT_EQ(errnoOf(client_.receive(box)), EAGAIN);
}

TEST_F(NamespaceTest, UnlinkRefusesControlNodesAndMissingNames) {
  const uint64_t box = client_.mkdir("a");
  EXPECT_EQ(errnoOf(engine_.unlink(box, ".send")), EPERM);
  EXPECT_EQ(errnoOf(engine_.unlink(box, ".receive")), EPERM);
  EXPECT_EQ(errnoOf(engine_.unlink(box, "nothing")), ENOENT);
  EXPECT_EQ(errnoOf(engine_.unlink(ino::kMailboxes, "a")), EISDIR);
  EXPECT_TRUE(engine_.lookup(box, ".send"));
}

TEST_F(NamespaceTest, AnInFlightMessageCanNeitherBeUnlinkedNorForwarded) {
  const uint64_t a = client_.mkdir("a");
  const uint64_t b = client_.mkdir("b");
  ASSERT_EQ(errnoOf(client_.send(a, "mine")), 0);
  const uint64_t rx = client_.openReceive(a);
  ASSERT_EQ(textOf(client_.readNow(rx, 1)), "m");
  EXPECT_EQ(errnoOf(engine_.unlink(a, "0000000001")), ENOENT);
  EXPECT_EQ(errnoOf(engine_.rename(a, "0000000001", b, "0000000001", 0)), ENOENT);
  EXPECT_EQ(textOf(client_.readNow(rx)), "ine");
  engine_.release(rx);
  EXPECT_TRUE(client_.list(b).empty());
}

TEST_F(NamespaceTest, UnlinkingADropInBeingWrittenDiscardsItsWrites) {
  const uint64_t box = client_.mkdir("a");
  auto created = client_.create(box, "draft", O_WRONLY | O_CREAT);
  ASSERT_TRUE(created);
  const uint64_t fh = created->second.fh;
  ASSERT_EQ(errnoOf(client_.write(fh, "abc", 0)), 0);
  ASSERT_EQ(errnoOf(engine_.unlink(box, "draft")), 0);
  EXPECT_EQ(errnoOf(engine_.lookup(box, "draft")), ENOENT);
  EXPECT_EQ(errnoOf(client_.write(fh, "def", 3)), 0) << "like writing to an unlinked file";
  EXPECT_EQ(errnoOf(client_.flush(fh)), 0);
  engine_.release(fh);
  EXPECT_TRUE(client_.list(box).empty());
  EXPECT_EQ(errnoOf(client_.receive(box)), EAGAIN);
}

TEST_F(NamespaceTest, ForwardingAMessageKeepsItsNameAndInodeAndJoinsTheTail) {
  const uint64_t a = client_.mkdir("a");
  const uint64_t b = client_.mkdir("b");
  auto created = client_.create(a, "report", O_WRONLY | O_CREAT);
  ASSERT_TRUE(created);
  ASSERT_EQ(errnoOf(client_.write(created->second.fh, "contents", 0)), 0);
  engine_.release(created->second.fh);
  ASSERT_EQ(errnoOf(client_.send(b, "b1")), 0);
  ASSERT_EQ(errnoOf(client_.send(b, "b2")), 0);
  const uint64_t before = client_.inoOf(a, "report");
  ASSERT_NE(before, 0u);

  ASSERT_EQ(errnoOf(engine_.rename(a, "report", b, "report", 0)), 0);
  EXPECT_TRUE(client_.list(a).empty());
  EXPECT_EQ(errnoOf(engine_.lookup(a, "report")), ENOENT);
  EXPECT_EQ(client_.list(b), (std::vector<std::string>{"0000000001", "0000000002", "report"}));
  EXPECT_EQ(client_.inoOf(b, "report"), before) << "forwarded, not copied";
  // The tail of the queue: received after the target's own messages.
  EXPECT_EQ(textOf(client_.receive(b)), "b1");
  EXPECT_EQ(textOf(client_.receive(b)), "b2");
  EXPECT_EQ(textOf(client_.receive(b)), "contents");
  EXPECT_EQ(errnoOf(client_.receive(a)), EAGAIN);
}

TEST_F(NamespaceTest, ForwardingOntoATakenNameIsEEXISTAndMovesNothing) {
  const uint64_t a = client_.mkdir("a");
  const uint64_t b = client_.mkdir("b");
  ASSERT_EQ(errnoOf(client_.send(a, "from a")), 0);
  ASSERT_EQ(errnoOf(client_.send(b, "from b")), 0);
  EXPECT_EQ(errnoOf(engine_.rename(a, "0000000001", b, "0000000001", 0)), EEXIST);
  EXPECT_EQ(client_.list(a), std::vector<std::string>{"0000000001"});
  EXPECT_EQ(client_.list(b), std::vector<std::string>{"0000000001"});
  EXPECT_EQ(textOf(client_.receive(a)), "from a");
  EXPECT_EQ(textOf(client_.receive(b)), "from b");
}

TEST_F(NamespaceTest, ForwardingOntoANameBeingWrittenIsEEXIST) {
  const uint64_t a = client_.mkdir("a");
  const uint64_t b = client_.mkdir("b");
  ASSERT_EQ(errnoOf(client_.send(a, "from a")), 0);
  auto created = client_.create(b, "0000000001", O_WRONLY | O_CREAT);
  ASSERT_TRUE(created);
  EXPECT_EQ(errnoOf(engine_.rename(a, "0000000001", b, "0000000001", 0)), EEXIST);
  engine_.release(created->second.fh);
  EXPECT_EQ(textOf(client_.receive(a)), "from a");
}

TEST_F(NamespaceTest, ForwardedMessageIsHandedToAParkedReceiverOfTheTarget) {
  const uint64_t a = client_.mkdir("a");
  const uint64_t b = client_.mkdir("b");
  ASSERT_EQ(errnoOf(client_.send(a, "relay")), 0);
  const uint64_t rx = client_.openReceive(b);
  ReadProbe probe;
  ASSERT_TRUE(client_.read(rx, kBigRead, false, probe.callback()).has_value());
  ASSERT_EQ(errnoOf(engine_.rename(a, "0000000001", b, "0000000001", 0)), 0);
  ASSERT_EQ(probe.count(), 1u);
  EXPECT_EQ(textOf(probe.result()), "relay");
  EXPECT_TRUE(client_.list(a).empty());
  EXPECT_TRUE(client_.list(b).empty());
  engine_.release(rx);
}

TEST_F(NamespaceTest, SequenceNamesInTheTargetSkipAForwardedMessagesName) {
  const uint64_t a = client_.mkdir("a");
  const uint64_t b = client_.mkdir("b");
  ASSERT_EQ(errnoOf(client_.send(a, "forwarded")), 0);
  ASSERT_EQ(errnoOf(engine_.rename(a, "0000000001", b, "0000000001", 0)), 0);
  ASSERT_EQ(errnoOf(client_.send(b, "local")), 0);
  EXPECT_EQ(client_.list(b), (std::vector<std::string>{"0000000001", "0000000002"}));
  EXPECT_EQ(textOf(client_.receive(b)), "forwarded");
  EXPECT_EQ(textOf(client_.receive(b)), "local");
}

TEST_F(NamespaceTest, ForwardingIntoTheRootOrMailboxesDirectoryIsRefused) {
  const uint64_t a = client_.mkdir("a");
  ASSERT_EQ(errnoOf(client_.send(a, "stay")), 0);
  EXPECT_NE(errnoOf(engine_.rename(a, "0000000001", ino::kMailboxes, "loose", 0)), 0);
  EXPECT_NE(errnoOf(engine_.rename(a, "0000000001", ino::kRoot, "loose", 0)), 0);
  EXPECT_EQ(client_.list(a), std::vector<std::string>{"0000000001"});
}

}  // namespace
}  // namespace ipcfs::test
