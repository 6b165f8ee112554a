// Durable mode through the engine: what a clean restart and a crash (the state directory
// copied while the engine runs, as a kill -9 would leave it) keep, and what they give back.
// The journal's writer thread is not started here: every acknowledgement waits for a write
// on the caller's thread, so completions still come before the calls return.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "engine_fixture.hpp"
#include "ipcfs/engine.hpp"
#include "ipcfs/inode.hpp"

namespace ipcfs::test {
namespace {

namespace fs = std::filesystem;

class DurableTest : public ::testing::Test {
 protected:
  DurableTest() {
    std::string tmpl = (fs::temp_directory_path() / "ipcfs-durable-test.XXXXXX").string();
    if (::mkdtemp(tmpl.data())) root_ = tmpl;
  }
  ~DurableTest() override {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }

  std::string dir(const std::string& name = "state") const { return root_ + "/" + name; }

  // A new engine on `state`; the test fails if it does not load.
  std::unique_ptr<Engine> open(const std::string& state) {
    auto e = std::make_unique<Engine>();
    auto r = e->openStateDir(state);
    EXPECT_TRUE(r) << (r ? "" : r.error());
    return e;
  }

  // The state directory as a kill -9 would leave it now.
  std::string crashCopy(const std::string& state) {
    const std::string copy = state + ".crashed";
    fs::copy(state, copy, fs::copy_options::recursive);
    return copy;
  }

  std::string root_;
};

TEST_F(DurableTest, ACleanRestartKeepsMailboxesMessagesAndSettings) {
  uint64_t box = 0, msgIno = 0;
  {
    auto e = open(dir());
    EngineClient c(*e);
    box = c.mkdir("orders", 0700);
    ASSERT_TRUE(e->setxattr(box, "user.ipc.capacity", "5"));
    ASSERT_TRUE(e->setxattr(box, "user.ipc.policy", "exclusive"));
    ASSERT_TRUE(e->setxattr(box, "user.ipc.max_msg_size", "100"));
    ASSERT_EQ(errnoOf(c.send(box, "first")), 0);
    ASSERT_EQ(errnoOf(c.send(box, "second")), 0);
    ASSERT_EQ(c.receive(box), "first");
    msgIno = c.inoOf(box, "0000000002");
  }
  auto e = open(dir());
  EngineClient c(*e);
  auto st = e->lookup(ino::kMailboxes, "orders");
  ASSERT_TRUE(st);
  EXPECT_EQ(st->st_ino, box);
  EXPECT_EQ(st->st_mode & 07777, 0700u);
  EXPECT_EQ(st->st_uid, kAlice.uid);
  EXPECT_EQ(c.list(box), std::vector<std::string>{"0000000002"});
  EXPECT_EQ(c.inoOf(box, "0000000002"), msgIno);
  EXPECT_EQ(c.xattr(box, "user.ipc.capacity"), "5");
  EXPECT_EQ(c.xattr(box, "user.ipc.policy"), "exclusive");
  EXPECT_EQ(c.xattr(box, "user.ipc.max_msg_size"), "100");
  ASSERT_EQ(errnoOf(c.send(box, "third")), 0);
  EXPECT_EQ(c.list(box), (std::vector<std::string>{"0000000002", "0000000003"})) << "sequence numbers go on";
  EXPECT_EQ(c.receive(box), "second");
}

TEST_F(DurableTest, AnAcknowledgedMessageSurvivesACrash) {
  auto e = open(dir());
  EngineClient c(*e);
  const uint64_t box = c.mkdir("a");
  ASSERT_EQ(errnoOf(c.send(box, "kept")), 0);
  auto after = open(crashCopy(dir()));
  EngineClient ca(*after);
  EXPECT_EQ(ca.receive(box), "kept");
  EXPECT_EQ(ca.xattr(box, "user.ipc.id"), std::to_string(ino::idOf(box)));
}

TEST_F(DurableTest, AMessageReadToTheEndIsNotDeliveredAgainAfterACrash) {
  auto e = open(dir());
  EngineClient c(*e);
  const uint64_t box = c.mkdir("a");
  ASSERT_EQ(errnoOf(c.send(box, "once")), 0);
  ASSERT_EQ(errnoOf(c.send(box, "twice")), 0);
  ASSERT_EQ(c.receive(box), "once");
  auto after = open(crashCopy(dir()));
  EngineClient ca(*after);
  EXPECT_EQ(ca.list(box), std::vector<std::string>{"0000000002"});
}

TEST_F(DurableTest, AMessageHalfReadWhenTheDaemonDiesComesBackCountedAsRedelivered) {
  auto e = open(dir());
  EngineClient c(*e);
  const uint64_t box = c.mkdir("a");
  ASSERT_EQ(errnoOf(c.send(box, "first message")), 0);
  ASSERT_EQ(errnoOf(c.send(box, "second")), 0);
  const uint64_t fh = c.openReceive(box);
  ASSERT_EQ(c.readNow(fh, 5), "first");
  auto after = open(crashCopy(dir()));
  EngineClient ca(*after);
  EXPECT_EQ(ca.xattr(ca.inoOf(box, "0000000001"), "user.ipc.redeliveries"), "1");
  EXPECT_EQ(ca.receive(box), "first message") << "back at the head of the queue";
  EXPECT_EQ(ca.receive(box), "second");
  e->release(fh);
}

TEST_F(DurableTest, AMessageReadWholeButNotConfirmedComesBackUntilTheNextRead) {
  auto e = open(dir());
  EngineClient c(*e);
  const uint64_t box = c.mkdir("a");
  ASSERT_EQ(errnoOf(c.send(box, "whole")), 0);
  const uint64_t fh = c.openReceive(box);
  ASSERT_EQ(c.readNow(fh), "whole");  // every byte, but not yet the end-of-message read
  {
    auto after = open(crashCopy(dir()));
    EngineClient ca(*after);
    EXPECT_EQ(ca.xattr(ca.inoOf(box, "0000000001"), "user.ipc.redeliveries"), "1");
  }
  fs::remove_all(dir() + ".crashed");
  ASSERT_EQ(c.readNow(fh), "");  // the end: the reader got it all
  auto after = open(crashCopy(dir()));
  EngineClient ca(*after);
  EXPECT_TRUE(ca.list(box).empty());
  e->release(fh);
}

TEST_F(DurableTest, ABatchReadIsConfirmedByTheReadersNextRead) {
  auto e = open(dir());
  EngineClient c(*e);
  const uint64_t box = c.mkdir("a");
  ASSERT_EQ(errnoOf(c.send(box, "one")), 0);
  ASSERT_EQ(errnoOf(c.send(box, "two")), 0);
  auto opened = e->open(ino::make(ino::Kind::ReceiveLines, ino::idOf(box)), O_RDONLY, kAlice);
  ASSERT_TRUE(opened);
  ASSERT_EQ(c.readNow(opened->fh), "one\ntwo\n");
  {
    auto after = open(crashCopy(dir()));
    EngineClient ca(*after);
    EXPECT_EQ(ca.list(box), (std::vector<std::string>{"0000000001", "0000000002"}));
    EXPECT_EQ(ca.receive(box), "one") << "in their order, back at the head";
  }
  fs::remove_all(dir() + ".crashed");
  EXPECT_EQ(errnoOf(c.readNow(opened->fh)), EAGAIN);
  auto after = open(crashCopy(dir()));
  EngineClient ca(*after);
  EXPECT_TRUE(ca.list(box).empty());
  e->release(opened->fh);
}

TEST_F(DurableTest, AMessageBeingReadAtACleanStopComesBackCountedAsRedelivered) {
  uint64_t box = 0;
  {
    auto e = open(dir());
    EngineClient c(*e);
    box = c.mkdir("a");
    ASSERT_EQ(errnoOf(c.send(box, "interrupted")), 0);
    const uint64_t fh = c.openReceive(box);
    ASSERT_EQ(c.readNow(fh, 3), "int");
    e->shutdown();
  }
  auto e = open(dir());
  EngineClient c(*e);
  EXPECT_EQ(c.xattr(c.inoOf(box, "0000000001"), "user.ipc.redeliveries"), "1");
}

TEST_F(DurableTest, ForwardsRenamesRemovalsAndOwnersAreReplayed) {
  auto e = open(dir());
  EngineClient c(*e);
  const uint64_t a = c.mkdir("a"), b = c.mkdir("b"), gone = c.mkdir("gone");
  ASSERT_EQ(errnoOf(c.send(a, "to forward")), 0);
  ASSERT_EQ(errnoOf(c.send(a, "to rename")), 0);
  ASSERT_EQ(errnoOf(c.send(a, "to remove")), 0);
  ASSERT_TRUE(e->rename(a, "0000000001", b, "forwarded", 0));
  ASSERT_TRUE(e->rename(a, "0000000002", a, "renamed", 0));
  ASSERT_TRUE(e->unlink(a, "0000000003"));
  AttrChange chmod;
  chmod.mode = 0600;
  ASSERT_TRUE(e->setattr(c.inoOf(a, "renamed"), chmod));
  ASSERT_TRUE(e->rmdir(ino::kMailboxes, "gone"));
  ASSERT_TRUE(e->rename(ino::kMailboxes, "b", ino::kMailboxes, "b2", 0));
  auto after = open(crashCopy(dir()));
  EngineClient ca(*after);
  EXPECT_EQ(ca.list(ino::kMailboxes), (std::vector<std::string>{"a", "b2"}));
  EXPECT_EQ(ca.list(a), std::vector<std::string>{"renamed"});
  EXPECT_EQ(ca.list(b), std::vector<std::string>{"forwarded"});
  auto st = after->getattr(ca.inoOf(a, "renamed"));
  ASSERT_TRUE(st);
  EXPECT_EQ(st->st_mode & 07777, 0600u);
  EXPECT_FALSE(after->getattr(gone));
  EXPECT_EQ(ca.receive(b), "to forward");
}

TEST_F(DurableTest, SemaphoresSegmentsAndPipeNodesAreKept) {
  auto e = open(dir());
  EngineClient c(*e);
  auto sem = e->create(ino::kSem, "items", 0640, O_CREAT | O_WRONLY, kAlice);
  ASSERT_TRUE(sem);
  ASSERT_EQ(errnoOf(c.write(sem->second.fh, "3")), 0);
  e->release(sem->second.fh);
  auto seg = e->create(ino::kShm, "ring", 0600, O_CREAT | O_RDWR, kAlice);
  ASSERT_TRUE(seg);
  ASSERT_EQ(errnoOf(c.write(seg->second.fh, "contents", 0)), 0);
  ASSERT_EQ(errnoOf(c.fsync(seg->second.fh)), 0);
  ASSERT_EQ(errnoOf(c.write(seg->second.fh, "XX", 0)), 0);  // not synced: not kept
  ASSERT_TRUE(e->mknod(ino::kPipes, "fifo", S_IFIFO | 0600, kAlice));
  auto sub = e->mkdir(ino::kPipes, "sub", 0750, kAlice);
  ASSERT_TRUE(sub);
  auto duplex = e->create(sub->st_ino, "chat", 0600, O_CREAT | O_RDWR, kAlice);
  ASSERT_TRUE(duplex);
  e->release(duplex->second.fh);

  auto after = open(crashCopy(dir()));
  EngineClient ca(*after);
  EXPECT_EQ(ca.xattr(sem->first.st_ino, "user.ipc.value"), "3");
  auto segStat = after->lookup(ino::kShm, "ring");
  ASSERT_TRUE(segStat);
  EXPECT_EQ(segStat->st_ino, seg->first.st_ino);
  EXPECT_EQ(segStat->st_size, 8);
  auto opened = after->open(segStat->st_ino, O_RDONLY, kAlice);
  ASSERT_TRUE(opened);
  EXPECT_EQ(ca.readNow(opened->fh), "contents");
  after->release(opened->fh);
  auto fifo = after->lookup(ino::kPipes, "fifo");
  ASSERT_TRUE(fifo);
  EXPECT_TRUE(S_ISFIFO(fifo->st_mode));
  EXPECT_EQ(ca.list(sub->st_ino), std::vector<std::string>{"chat"});
  e->release(seg->second.fh);
}

TEST_F(DurableTest, ATruncatedSnapshotIsRefused) {
  {
    auto e = open(dir());
    EngineClient c(*e);
    c.mkdir("a");
  }
  const std::string snap = dir() + "/snapshot";
  fs::resize_file(snap, fs::file_size(snap) - 3);
  Engine e;
  auto r = e.openStateDir(dir());
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().find("snapshot"), std::string::npos) << r.error();
}

}  // namespace
}  // namespace ipcfs::test
