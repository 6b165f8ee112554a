// Sending into mailboxes: .send message boundaries and naming, drop-in files, message files,
// size and byte limits, and which opens are refused.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <fcntl.h>

#include <cerrno>
#include <string>
#include <vector>

#include "engine_fixture.hpp"
#include "ipcfs/engine.hpp"
#include "ipcfs/inode.hpp"

namespace ipcfs::test {
namespace {

using MailboxSendTest = EngineTest;

AttrChange sizeChange(off_t size) {
  AttrChange change;
  change.size = size;
  return change;
}

AttrChange modeChange(mode_t mode) {
  AttrChange change;
  change.mode = mode;
  return change;
}

TEST_F(MailboxSendTest, FlushDeliversWhatWasWrittenAsOneMessage) {
  const uint64_t box = client_.mkdir("a");
  const uint64_t fh = client_.openSend(box);
  ASSERT_EQ(errnoOf(client_.write(fh, "a\n", 0)), 0);
  ASSERT_EQ(errnoOf(client_.write(fh, "b\n", 0)), 0);
  EXPECT_TRUE(client_.list(box).empty()) << "nothing is queued before the close";
  ASSERT_EQ(errnoOf(client_.flush(fh)), 0);
  engine_.release(fh);
  EXPECT_EQ(client_.list(box), std::vector<std::string>{"0000000001"});
  EXPECT_EQ(textOf(client_.receive(box)), "a\nb\n");
}

TEST_F(MailboxSendTest, FlushWithNothingWrittenSendsNothing) {
  const uint64_t box = client_.mkdir("a");
  const uint64_t fh = client_.openSend(box);
  EXPECT_EQ(errnoOf(client_.flush(fh)), 0);
  EXPECT_EQ(errnoOf(client_.fsync(fh)), 0);
  engine_.release(fh);
  EXPECT_TRUE(client_.list(box).empty());
  EXPECT_EQ(client_.rootStatusValue("messages"), "0");
}

TEST_F(MailboxSendTest, FlushAfterADeliverySendsNothingMore) {
  const uint64_t box = client_.mkdir("a");
  const uint64_t fh = client_.openSend(box);
  ASSERT_EQ(errnoOf(client_.write(fh, "once", 0)), 0);
  ASSERT_EQ(errnoOf(client_.flush(fh)), 0);
  ASSERT_EQ(errnoOf(client_.flush(fh)), 0);  // a duplicated descriptor closing
  engine_.release(fh);
  EXPECT_EQ(client_.list(box).size(), 1u);
}

TEST_F(MailboxSendTest, ZeroLengthWriteThenFlushSendsNothing) {
  // "A close or fsync with nothing written since the last delivery sends nothing."
  const uint64_t box = client_.mkdir("a");
  const uint64_t fh = client_.openSend(box);
  ASSERT_EQ(errnoOf(client_.write(fh, "", 0)), 0);
  ASSERT_EQ(errnoOf(client_.flush(fh)), 0);
  engine_.release(fh);
  EXPECT_TRUE(client_.list(box).empty()) << "a zero-length write must not make an empty message";
}

TEST_F(MailboxSendTest, TwoFlushesMakeTwoMessagesInOrder) {
  const uint64_t box = client_.mkdir("a");
  const uint64_t fh = client_.openSend(box);
  ASSERT_EQ(errnoOf(client_.write(fh, "a\n", 0)), 0);
  ASSERT_EQ(errnoOf(client_.flush(fh)), 0);
  ASSERT_EQ(errnoOf(client_.write(fh, "b\n", 0)), 0);
  ASSERT_EQ(errnoOf(client_.fsync(fh)), 0);
  engine_.release(fh);
  EXPECT_EQ(client_.list(box), (std::vector<std::string>{"0000000001", "0000000002"}));
  EXPECT_EQ(textOf(client_.receive(box)), "a\n");
  EXPECT_EQ(textOf(client_.receive(box)), "b\n");
}

TEST_F(MailboxSendTest, ReleaseDeliversAPendingDraft) {
  const uint64_t box = client_.mkdir("a");
  const uint64_t fh = client_.openSend(box);
  ASSERT_EQ(errnoOf(client_.write(fh, "last words", 0)), 0);
  engine_.release(fh);
  EXPECT_EQ(textOf(client_.receive(box)), "last words");
}

TEST_F(MailboxSendTest, MessagesAreNamedByTenDigitSequenceNumbers) {
  const uint64_t box = client_.mkdir("a");
  std::vector<std::string> expected;
  for (int i = 1; i <= 12; ++i) {
    // (fmt, not "m" + std::to_string(i): GCC 12 -O2 warns falsely on that, bug 105329)
    ASSERT_EQ(errnoOf(client_.send(box, fmt::format("m{}", i))), 0);
    expected.push_back(fmt::format("{:010}", i));
  }
  EXPECT_EQ(client_.list(box), expected);
  const uint64_t twelfth = client_.inoOf(box, "0000000012");
  ASSERT_NE(twelfth, 0u);
  EXPECT_EQ(client_.xattr(twelfth, "user.ipc.seq"), "12");
}

TEST_F(MailboxSendTest, SequenceNumbersArePerMailboxAndNotReusedAfterReceive) {
  const uint64_t a = client_.mkdir("a");
  const uint64_t b = client_.mkdir("b");
  ASSERT_EQ(errnoOf(client_.send(a, "x")), 0);
  ASSERT_EQ(textOf(client_.receive(a)), "x");
  ASSERT_EQ(errnoOf(client_.send(a, "y")), 0);
  ASSERT_EQ(errnoOf(client_.send(b, "z")), 0);
  EXPECT_EQ(client_.list(a), std::vector<std::string>{"0000000002"});
  EXPECT_EQ(client_.list(b), std::vector<std::string>{"0000000001"});
}

TEST_F(MailboxSendTest, MessageFileShowsPayloadSizeSenderAndMode0444) {
  const uint64_t box = client_.mkdir("a");
  const Caller bob{.pid = 777, .uid = 2001, .gid = 2002};
  ASSERT_EQ(errnoOf(client_.send(box, "hello", bob)), 0);
  auto st = engine_.lookup(box, "0000000001");
  ASSERT_TRUE(st);
  EXPECT_TRUE(S_ISREG(st->st_mode));
  EXPECT_EQ(st->st_mode & 07777, 0444u);
  EXPECT_EQ(st->st_size, 5);
  EXPECT_EQ(st->st_uid, 2001u);
  EXPECT_EQ(st->st_gid, 2002u);
  EXPECT_EQ(ino::kindOf(st->st_ino), ino::Kind::Message);
  EXPECT_EQ(client_.xattr(st->st_ino, "user.ipc.sender_pid"), "777");
  EXPECT_EQ(client_.xattr(st->st_ino, "user.ipc.redeliveries"), "0");
}

TEST_F(MailboxSendTest, ReadingAMessageFilePeeksWithoutTaking) {
  const uint64_t box = client_.mkdir("a");
  ASSERT_EQ(errnoOf(client_.send(box, "peek me")), 0);
  const uint64_t msg = client_.inoOf(box, "0000000001");
  auto opened = engine_.open(msg, O_RDONLY, kAlice);
  ASSERT_TRUE(opened);
  EXPECT_EQ(textOf(client_.readNow(opened->fh)), "peek me");
  engine_.release(opened->fh);
  EXPECT_EQ(client_.list(box), std::vector<std::string>{"0000000001"});
  EXPECT_EQ(textOf(client_.receive(box)), "peek me");
}

TEST_F(MailboxSendTest, QueuedMessageContentsAreImmutableButModeChanges) {
  const uint64_t box = client_.mkdir("a");
  ASSERT_EQ(errnoOf(client_.send(box, "fixed")), 0);
  const uint64_t msg = client_.inoOf(box, "0000000001");
  EXPECT_EQ(errnoOf(engine_.open(msg, O_WRONLY, kAlice)), EACCES);
  EXPECT_EQ(errnoOf(engine_.open(msg, O_RDWR, kAlice)), EACCES);
  EXPECT_EQ(errnoOf(engine_.open(msg, O_RDONLY | O_TRUNC, kAlice)), EACCES);
  EXPECT_EQ(errnoOf(engine_.setattr(msg, sizeChange(0))), EACCES);
  auto st = engine_.setattr(msg, modeChange(0600));
  ASSERT_TRUE(st);
  EXPECT_EQ(st->st_mode & 07777, 0600u);
  EXPECT_EQ(textOf(client_.receive(box)), "fixed");
}

TEST_F(MailboxSendTest, OpenRefusesTheWrongDirectionOnControlNodes) {
  const uint64_t box = client_.mkdir("a");
  EXPECT_EQ(errnoOf(engine_.open(sendIno(box), O_RDONLY, kAlice)), EACCES);
  EXPECT_EQ(errnoOf(engine_.open(receiveIno(box), O_WRONLY, kAlice)), EACCES);
  EXPECT_EQ(errnoOf(engine_.open(receiveIno(box), O_RDWR, kAlice)), EACCES);
  EXPECT_EQ(errnoOf(engine_.open(statusIno(box), O_WRONLY, kAlice)), EACCES);
  EXPECT_EQ(errnoOf(engine_.open(box, O_RDONLY, kAlice)), EISDIR);
}

TEST_F(MailboxSendTest, OpenOfAMissingMailboxOrMessageIsENOENT) {
  EXPECT_EQ(errnoOf(engine_.open(ino::make(ino::Kind::Send, 99), O_WRONLY, kAlice)), ENOENT);
  EXPECT_EQ(errnoOf(engine_.open(ino::make(ino::Kind::Message, 99), O_RDONLY, kAlice)), ENOENT);
}

TEST_F(MailboxSendTest, WriteToAReceiverHandleFails) {
  const uint64_t box = client_.mkdir("a");
  const uint64_t fh = client_.openReceive(box);
  EXPECT_NE(errnoOf(client_.write(fh, "x", 0)), 0);
  engine_.release(fh);
  EXPECT_TRUE(client_.list(box).empty());
}

// --- max_msg_size ---------------------------------------------------------------------

TEST_F(MailboxSendTest, OverlongWriteFailsWithEFBIGAndDropsTheWholeDraft) {
  const uint64_t box = client_.mkdir("a");
  ASSERT_EQ(errnoOf(engine_.setxattr(box, "user.ipc.max_msg_size", "10")), 0);
  const uint64_t fh = client_.openSend(box);
  ASSERT_EQ(errnoOf(client_.write(fh, "123456", 0)), 0);
  EXPECT_EQ(errnoOf(client_.write(fh, "78901", 0)), EFBIG);
  EXPECT_EQ(errnoOf(client_.flush(fh)), 0);
  EXPECT_TRUE(client_.list(box).empty()) << "the dropped draft must not be delivered, not even partly";
  // The next write starts a new message.
  ASSERT_EQ(errnoOf(client_.write(fh, "fresh", 0)), 0);
  ASSERT_EQ(errnoOf(client_.flush(fh)), 0);
  engine_.release(fh);
  EXPECT_EQ(textOf(client_.receive(box)), "fresh");
  EXPECT_TRUE(client_.list(box).empty());
  EXPECT_EQ(client_.rootStatusValue("bytes_held"), "0");
}

TEST_F(MailboxSendTest, MessageOfExactlyMaxMsgSizeIsAccepted) {
  const uint64_t box = client_.mkdir("a");
  ASSERT_EQ(errnoOf(engine_.setxattr(box, "user.ipc.max_msg_size", "8")), 0);
  ASSERT_EQ(errnoOf(client_.send(box, "12345678")), 0);
  EXPECT_EQ(errnoOf(client_.send(box, "123456789")), EFBIG);
  EXPECT_EQ(client_.list(box).size(), 1u);
}

TEST_F(MailboxSendTest, DefaultMaxMsgSizeIsAtLeastOneMebibyte) {
  const uint64_t box = client_.mkdir("a");
  const std::string big(size_t{1} << 20, 'x');
  ASSERT_EQ(errnoOf(client_.send(box, big)), 0);
  auto st = engine_.lookup(box, "0000000001");
  ASSERT_TRUE(st);
  EXPECT_EQ(st->st_size, off_t{1} << 20);
}

TEST_F(MailboxSendTest, ReleaseAfterEFBIGDeliversNothing) {
  const uint64_t box = client_.mkdir("a");
  ASSERT_EQ(errnoOf(engine_.setxattr(box, "user.ipc.max_msg_size", "4")), 0);
  const uint64_t fh = client_.openSend(box);
  ASSERT_EQ(errnoOf(client_.write(fh, "abc", 0)), 0);
  EXPECT_EQ(errnoOf(client_.write(fh, "de", 0)), EFBIG);
  engine_.release(fh);
  EXPECT_TRUE(client_.list(box).empty());
}

// --- the global byte limit ------------------------------------------------------------

TEST(MailboxByteLimitTest, SendBeyondMaxBytesFailsWithENOSPCAndQueuesNothingPartial) {
  Engine engine(Limits{.maxBytes = 100});
  EngineClient client(engine);
  const uint64_t box = client.mkdir("a");
  const uint64_t fh = client.openSend(box);
  ASSERT_EQ(errnoOf(client.write(fh, std::string(60, 'a'), 0)), 0);
  EXPECT_EQ(errnoOf(client.write(fh, std::string(50, 'b'), 0)), ENOSPC);
  EXPECT_EQ(errnoOf(client.flush(fh)), 0);
  EXPECT_TRUE(client.list(box).empty()) << "no part of the refused message may be queued";
  // The refused draft's bytes were given back: a full-sized message now fits.
  ASSERT_EQ(errnoOf(client.write(fh, std::string(100, 'c'), 0)), 0);
  ASSERT_EQ(errnoOf(client.flush(fh)), 0);
  engine.release(fh);
  EXPECT_EQ(textOf(client.receive(box)), std::string(100, 'c'));
}

TEST(MailboxByteLimitTest, QueuedBytesCountUntilReceived) {
  Engine engine(Limits{.maxBytes = 100});
  EngineClient client(engine);
  const uint64_t box = client.mkdir("a");
  ASSERT_EQ(errnoOf(client.send(box, std::string(70, 'a'))), 0);
  EXPECT_EQ(errnoOf(client.send(box, std::string(40, 'b'))), ENOSPC);
  EXPECT_EQ(client.list(box).size(), 1u);
  ASSERT_EQ(textOf(client.receive(box)), std::string(70, 'a'));
  EXPECT_EQ(errnoOf(client.send(box, std::string(40, 'b'))), 0);
  EXPECT_EQ(textOf(client.receive(box)), std::string(40, 'b'));
}

TEST(MailboxByteLimitTest, DiscardedMessageGivesItsBytesBack) {
  Engine engine(Limits{.maxBytes = 100});
  EngineClient client(engine);
  const uint64_t box = client.mkdir("a");
  ASSERT_EQ(errnoOf(client.send(box, std::string(90, 'a'))), 0);
  ASSERT_EQ(errnoOf(engine.unlink(box, "0000000001")), 0);
  EXPECT_EQ(errnoOf(client.send(box, std::string(90, 'b'))), 0);
}

TEST(MailboxByteLimitTest, DropInBeyondMaxBytesIsNotDeliveredPartially) {
  Engine engine(Limits{.maxBytes = 100});
  EngineClient client(engine);
  const uint64_t box = client.mkdir("a");
  auto created = client.create(box, "report", O_WRONLY | O_CREAT);
  ASSERT_TRUE(created);
  const uint64_t fh = created->second.fh;
  ASSERT_EQ(errnoOf(client.write(fh, std::string(60, 'a'), 0)), 0);
  EXPECT_EQ(errnoOf(client.write(fh, std::string(50, 'b'), 60)), ENOSPC);
  (void)client.flush(fh);
  engine.release(fh);
  // Whatever the engine makes of the failed copy, a receiver never gets the 60-byte prefix.
  auto got = client.receive(box);
  if (got) {
    EXPECT_NE(got->size(), 60u) << "the partial drop-in was delivered as if complete";
  }
}

TEST(MailboxByteLimitTest, UnlinkingADropInBeingWrittenGivesItsBytesBack) {
  Engine engine(Limits{.maxBytes = 100});
  EngineClient client(engine);
  const uint64_t box = client.mkdir("a");
  auto created = client.create(box, "draft", O_WRONLY | O_CREAT);
  ASSERT_TRUE(created);
  const uint64_t fh = created->second.fh;
  ASSERT_EQ(errnoOf(client.write(fh, std::string(80, 'a'), 0)), 0);
  ASSERT_EQ(errnoOf(engine.unlink(box, "draft")), 0);
  engine.release(fh);
  EXPECT_TRUE(client.list(box).empty());
  EXPECT_EQ(client.rootStatusValue("bytes_held"), "0") << "the discarded drop-in's bytes are still counted";
  EXPECT_EQ(errnoOf(client.send(box, std::string(80, 'b'))), 0) << "ENOSPC: the discarded drop-in's bytes leaked";
}

// --- drop-in files --------------------------------------------------------------------

class DropInTest : public EngineTest {
 protected:
  uint64_t createFile(uint64_t box, std::string_view name, int flags = O_WRONLY | O_CREAT) {
    auto created = client_.create(box, name, flags);
    if (!created) {
      ADD_FAILURE() << "create " << name << " failed: errno " << errnoOf(created);
      return 0;
    }
    return created->second.fh;
  }
};

TEST_F(DropInTest, ResolvesWhileBeingWrittenButIsNeitherListedNorReceivable) {
  const uint64_t box = client_.mkdir("a");
  const uint64_t fh = createFile(box, "note");
  ASSERT_EQ(errnoOf(client_.write(fh, "hi\n", 0)), 0);
  auto st = engine_.lookup(box, "note");
  ASSERT_TRUE(st);
  EXPECT_EQ(st->st_size, 3);
  EXPECT_TRUE(client_.list(box).empty());
  const uint64_t rx = client_.openReceive(box);
  EXPECT_EQ(errnoOf(client_.readNow(rx)), EAGAIN);
  auto readable = engine_.poll(rx, nullptr);
  ASSERT_TRUE(readable);
  EXPECT_FALSE(*readable);
  engine_.release(rx);
  engine_.release(fh);
}

TEST_F(DropInTest, IsDeliveredAtTheFirstFlushAfterAWrite) {
  const uint64_t box = client_.mkdir("a");
  const uint64_t fh = createFile(box, "note");
  ASSERT_EQ(errnoOf(client_.flush(fh)), 0);  // nothing written yet: not delivered
  EXPECT_TRUE(client_.list(box).empty());
  ASSERT_EQ(errnoOf(client_.write(fh, "hi\n", 0)), 0);
  ASSERT_EQ(errnoOf(client_.flush(fh)), 0);
  EXPECT_EQ(client_.list(box), std::vector<std::string>{"note"});
  EXPECT_EQ(errnoOf(client_.write(fh, "more", 3)), EACCES) << "queued contents are immutable";
  ASSERT_EQ(errnoOf(client_.flush(fh)), 0);
  engine_.release(fh);
  EXPECT_EQ(client_.list(box), std::vector<std::string>{"note"}) << "one drop-in is one message";
  EXPECT_EQ(textOf(client_.receive(box)), "hi\n");
}

TEST_F(DropInTest, KeepsItsNameAndGetsASequenceNumber) {
  const uint64_t box = client_.mkdir("a");
  ASSERT_EQ(errnoOf(client_.send(box, "first")), 0);
  const uint64_t fh = createFile(box, "report.pdf");
  ASSERT_EQ(errnoOf(client_.write(fh, "%PDF", 0)), 0);
  engine_.release(fh);
  ASSERT_EQ(errnoOf(client_.send(box, "third")), 0);
  EXPECT_EQ(client_.list(box), (std::vector<std::string>{"0000000001", "0000000003", "report.pdf"}));
  EXPECT_EQ(client_.xattr(client_.inoOf(box, "report.pdf"), "user.ipc.seq"), "2");
  EXPECT_EQ(textOf(client_.receive(box)), "first");
  EXPECT_EQ(textOf(client_.receive(box)), "%PDF");
  EXPECT_EQ(textOf(client_.receive(box)), "third");
}

TEST_F(DropInTest, NeverWrittenIsDeliveredEmptyAtRelease) {
  const uint64_t box = client_.mkdir("a");
  const uint64_t fh = createFile(box, "empty");
  EXPECT_TRUE(client_.list(box).empty());
  engine_.release(fh);
  EXPECT_EQ(client_.list(box), std::vector<std::string>{"empty"});
  auto st = engine_.lookup(box, "empty");
  ASSERT_TRUE(st);
  EXPECT_EQ(st->st_size, 0);
  EXPECT_EQ(textOf(client_.receive(box)), "");
  EXPECT_TRUE(client_.list(box).empty());
}

TEST_F(DropInTest, ExistingNameIsEEXISTWithOExclAndEACCESWithout) {
  const uint64_t box = client_.mkdir("a");
  const uint64_t fh = createFile(box, "note");
  ASSERT_EQ(errnoOf(client_.write(fh, "original", 0)), 0);
  engine_.release(fh);
  EXPECT_EQ(errnoOf(client_.create(box, "note", O_WRONLY | O_CREAT | O_EXCL)), EEXIST);
  EXPECT_EQ(errnoOf(client_.create(box, "note", O_WRONLY | O_CREAT)), EACCES);
  EXPECT_EQ(client_.list(box), std::vector<std::string>{"note"});
  EXPECT_EQ(textOf(client_.receive(box)), "original") << "the existing message must not be touched";
}

TEST_F(DropInTest, NameBeingWrittenIsAlsoTaken) {
  const uint64_t box = client_.mkdir("a");
  const uint64_t fh = createFile(box, "note");
  EXPECT_EQ(errnoOf(client_.create(box, "note", O_WRONLY | O_CREAT | O_EXCL)), EEXIST);
  EXPECT_EQ(errnoOf(client_.create(box, "note", O_WRONLY | O_CREAT)), EACCES);
  engine_.release(fh);
}

TEST_F(DropInTest, SequenceNamesSkipANameADropInTook) {
  const uint64_t box = client_.mkdir("a");
  ASSERT_EQ(errnoOf(client_.send(box, "sent")), 0);  // seq 1
  const uint64_t fh = createFile(box, "0000000003");
  ASSERT_EQ(errnoOf(client_.write(fh, "dropped", 0)), 0);
  engine_.release(fh);                                 // seq 2, keeps its own name
  ASSERT_EQ(errnoOf(client_.send(box, "again")), 0);  // seq 3's name is taken
  EXPECT_EQ(client_.list(box), (std::vector<std::string>{"0000000001", "0000000003", "0000000004"}));
  EXPECT_EQ(textOf(client_.receive(box)), "sent");
  EXPECT_EQ(textOf(client_.receive(box)), "dropped");
  EXPECT_EQ(textOf(client_.receive(box)), "again");
}

TEST_F(DropInTest, OverlongWriteFailsWithEFBIGAndDropsWhatWasWritten) {
  const uint64_t box = client_.mkdir("a");
  ASSERT_EQ(errnoOf(engine_.setxattr(box, "user.ipc.max_msg_size", "8")), 0);
  const uint64_t fh = createFile(box, "big");
  ASSERT_EQ(errnoOf(client_.write(fh, "12345", 0)), 0);
  EXPECT_EQ(errnoOf(client_.write(fh, "6789", 5)), EFBIG);
  engine_.release(fh);
  auto got = client_.receive(box);
  if (got) {
    EXPECT_NE(*got, "12345") << "the dropped drop-in was delivered partially";
  }
  EXPECT_EQ(client_.rootStatusValue("bytes_held"), "0");
}

TEST_F(DropInTest, MisplacedOrReservedNamesAreRefused) {
  const uint64_t box = client_.mkdir("a");
  EXPECT_EQ(errnoOf(client_.create(ino::kMailboxes, "file", O_WRONLY | O_CREAT)), EPERM);
  EXPECT_EQ(errnoOf(client_.create(ino::kRoot, "file", O_WRONLY | O_CREAT)), EPERM);
  EXPECT_EQ(errnoOf(client_.create(box, ".hidden", O_WRONLY | O_CREAT)), EINVAL);
  EXPECT_EQ(errnoOf(client_.create(box, std::string(256, 'n'))), ENAMETOOLONG);
  EXPECT_TRUE(client_.list(box).empty());
}

}  // namespace
}  // namespace ipcfs::test
