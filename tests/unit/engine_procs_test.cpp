// Direct communication (procs/): inboxes keyed by process instance, from/Q filtering by
// lineage, privacy, and retiring the inbox of a process that exited. The process table is
// a fake, so processes are born, die and get recycled pids on demand.
#include <gtest/gtest.h>

#include <fcntl.h>

#include <cerrno>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "engine_fixture.hpp"
#include "ipcfs/engine.hpp"
#include "ipcfs/inode.hpp"
#include "ipcfs/process_table.hpp"

namespace ipcfs::test {
namespace {

class FakeProcessTable final : public ProcessTable {
 public:
  void spawn(pid_t pid, pid_t parent, uid_t uid, uint64_t instance = 1) {
    std::lock_guard lock(mutex_);
    procs_[pid] = {ProcessStat{instance, parent}, ProcessCredentials{uid, uid}};
  }
  void exit(pid_t pid) {
    std::lock_guard lock(mutex_);
    procs_.erase(pid);
  }
  std::optional<ProcessStat> stat(pid_t pid) const override {
    std::lock_guard lock(mutex_);
    auto it = procs_.find(pid);
    return it == procs_.end() ? std::nullopt : std::optional(it->second.first);
  }
  std::optional<ProcessCredentials> credentials(pid_t pid) const override {
    std::lock_guard lock(mutex_);
    auto it = procs_.find(pid);
    return it == procs_.end() ? std::nullopt : std::optional(it->second.second);
  }

 private:
  mutable std::mutex mutex_;
  std::map<pid_t, std::pair<ProcessStat, ProcessCredentials>> procs_;
};

// A family of uid 1000: init(1) - shell(100) - { kAlice(4242) - worker(4300) }, and
// sibling(200) under init; and a stranger of uid 2000.
constexpr Caller kShell{.pid = 100, .uid = 1000, .gid = 1000};
constexpr Caller kWorker{.pid = 4300, .uid = 1000, .gid = 1000};
constexpr Caller kSibling{.pid = 200, .uid = 1000, .gid = 1000};
constexpr Caller kStranger{.pid = 300, .uid = 2000, .gid = 2000};
constexpr Caller kRoot{.pid = 400, .uid = 0, .gid = 0};

class ProcsTest : public ::testing::Test {
 protected:
  ProcsTest() {
    processes_->spawn(1, 0, 0);
    processes_->spawn(kShell.pid, 1, 1000);
    processes_->spawn(kAlice.pid, kShell.pid, 1000);
    processes_->spawn(kWorker.pid, kAlice.pid, 1000);
    processes_->spawn(kSibling.pid, 1, 1000);
    processes_->spawn(kStranger.pid, 1, 2000);
    processes_->spawn(kRoot.pid, 1, 0);
  }

  // procs/PID as seen by `who`: the inbox's inode, 0 if the lookup fails.
  uint64_t inbox(pid_t pid, const Caller& who = kAlice) {
    auto st = engine_.lookup(ino::kProcs, std::to_string(pid), who);
    return st ? st->st_ino : 0;
  }
  int lookupErrno(uint64_t parent, std::string_view name, const Caller& who = kAlice) {
    return errnoOf(engine_.lookup(parent, name, who));
  }
  int openErrno(uint64_t ino, int flags, const Caller& who) {
    auto opened = engine_.open(ino, flags, who);
    if (opened) engine_.release(opened->fh);
    return errnoOf(opened);
  }
  // from/Q of inbox `box`, as its owner sees it (0 if it does not resolve).
  uint64_t fromNode(uint64_t box, pid_t q, const Caller& who = kAlice) {
    auto dir = engine_.lookup(box, "from", who);
    if (!dir) return 0;
    auto st = engine_.lookup(dir->st_ino, std::to_string(q), who);
    return st ? st->st_ino : 0;
  }
  // Reads one whole message from an open receiving file.
  std::string takeWhole(uint64_t fh) {
    std::string out;
    for (;;) {
      auto r = client_.readNow(fh);
      if (!r) return "errno " + std::to_string(errnoOf(r));
      if (r->empty()) return out;
      out += *r;
    }
  }
  std::string receiveFrom(uint64_t box, pid_t q) {
    auto opened = engine_.open(fromNode(box, q), O_RDONLY, kAlice);
    if (!opened) return "errno " + std::to_string(errnoOf(opened));
    std::string text = takeWhole(opened->fh);
    engine_.release(opened->fh);
    return text;
  }
  std::vector<std::string> listProcs(const Caller& who = kAlice) {
    std::vector<std::string> names;
    auto r = engine_.readdir(ino::kProcs, 0, [&](const DirEntry& e) {
      if (e.name != "." && e.name != "..") names.emplace_back(e.name);
      return true;
    }, who);
    EXPECT_TRUE(r);
    return names;
  }

  std::shared_ptr<FakeProcessTable> processes_ = std::make_shared<FakeProcessTable>();
  Engine engine_{Limits{}, processes_};
  EngineClient client_{engine_};
};

TEST_F(ProcsTest, EveryLiveProcessHasAnInboxAndNothingElseDoes) {
  EXPECT_NE(inbox(kWorker.pid), 0u);
  EXPECT_EQ(ino::kindOf(inbox(kWorker.pid)), ino::Kind::Inbox);
  EXPECT_EQ(inbox(kWorker.pid), inbox(kWorker.pid)) << "one inbox per process instance";
  EXPECT_EQ(lookupErrno(ino::kProcs, "9999"), ENOENT) << "no such process";
  EXPECT_EQ(lookupErrno(ino::kProcs, "04242"), ENOENT) << "not a pid's name";
  EXPECT_EQ(lookupErrno(ino::kProcs, "alice"), ENOENT);
  EXPECT_EQ(errnoOf(engine_.mkdir(ino::kProcs, "5000", 0755, kAlice)), EPERM);
  EXPECT_EQ(errnoOf(engine_.rmdir(ino::kProcs, std::to_string(kWorker.pid))), EPERM);
}

TEST_F(ProcsTest, SelfLinksToTheCallersOwnPid) {
  auto st = engine_.lookup(ino::kProcs, "self", kWorker);
  ASSERT_TRUE(st);
  EXPECT_TRUE(S_ISLNK(st->st_mode));
  EXPECT_EQ(textOf(engine_.readlink(st->st_ino, kWorker)), "4300");
  EXPECT_EQ(textOf(engine_.readlink(st->st_ino, kShell)), "100");
}

TEST_F(ProcsTest, SendAndReceiveThroughAnInboxLikeAMailbox) {
  const uint64_t box = inbox(kAlice.pid);
  ASSERT_EQ(errnoOf(client_.send(box, "job 7 done", kWorker)), 0);
  EXPECT_EQ(client_.list(box), std::vector<std::string>{"0000000001"});
  EXPECT_EQ(textOf(client_.receive(box)), "job 7 done");
  EXPECT_EQ(client_.xattr(box, "user.ipc.capacity"), "unlimited");
}

TEST_F(ProcsTest, FromTakesOnlyWhatThatProcessOrItsDescendantsSent) {
  const uint64_t box = inbox(kShell.pid, kShell);
  ASSERT_EQ(errnoOf(client_.send(box, "sibling 1", kSibling)), 0);
  ASSERT_EQ(errnoOf(client_.send(box, "worker 1", kWorker)), 0);  // a descendant of kAlice
  ASSERT_EQ(errnoOf(client_.send(box, "alice 1", kAlice)), 0);
  ASSERT_EQ(errnoOf(client_.send(box, "sibling 2", kSibling)), 0);
  // kAlice is the shell's descendant, so she may receive from its inbox.
  EXPECT_EQ(receiveFrom(box, kAlice.pid), "worker 1");
  EXPECT_EQ(receiveFrom(box, kAlice.pid), "alice 1");
  EXPECT_EQ(receiveFrom(box, kWorker.pid), "errno " + std::to_string(EAGAIN)) << "nothing more from the worker";
  EXPECT_EQ(receiveFrom(box, kSibling.pid), "sibling 1");
  EXPECT_EQ(textOf(client_.receive(box)), "sibling 2");
}

TEST_F(ProcsTest, FromResolvesWhileTheSenderLivesOrHasMessagesQueued) {
  const uint64_t box = inbox(kAlice.pid);
  constexpr Caller kTemp{.pid = 4400, .uid = 1000, .gid = 1000};
  processes_->spawn(kTemp.pid, kAlice.pid, 1000);
  ASSERT_EQ(errnoOf(client_.send(box, "last words", kTemp)), 0);
  processes_->exit(kTemp.pid);
  ASSERT_NE(fromNode(box, kTemp.pid), 0u) << "messages from it are queued";
  EXPECT_EQ(receiveFrom(box, kTemp.pid), "last words");
  EXPECT_EQ(fromNode(box, kTemp.pid), 0u) << "gone, nothing queued: ENOENT";
  EXPECT_NE(fromNode(box, kSibling.pid), 0u) << "alive, nothing queued yet";
}

TEST_F(ProcsTest, AParkedFromReaderDoesNotHoldUpOtherReaders) {
  const uint64_t box = inbox(kAlice.pid);
  auto filtered = engine_.open(fromNode(box, kWorker.pid), O_RDONLY, kAlice);
  ASSERT_TRUE(filtered);
  ReadProbe waiting;
  auto parked = client_.read(filtered->fh, kBigRead, false, waiting.callback());
  ASSERT_TRUE(parked) << "nothing from the worker yet: the read waits";
  ASSERT_EQ(errnoOf(client_.send(box, "from the sibling", kSibling)), 0);
  EXPECT_EQ(waiting.count(), 0u) << "not what it waits for";
  EXPECT_EQ(textOf(client_.receive(box)), "from the sibling") << "a plain receive takes it at once";
  ASSERT_EQ(errnoOf(client_.send(box, "from the worker", kWorker)), 0);
  ASSERT_TRUE(waiting.waitForCount(1));
  EXPECT_EQ(textOf(waiting.result()), "from the worker");
  engine_.release(filtered->fh);
}

TEST_F(ProcsTest, OnlyTheProcessItsDescendantsAndRootReceiveOrBrowse) {
  const uint64_t box = inbox(kAlice.pid);
  ASSERT_EQ(errnoOf(client_.send(box, "private", kAlice)), 0);
  const uint64_t receive = receiveIno(box);
  EXPECT_EQ(openErrno(receive, O_RDONLY, kAlice), 0);
  EXPECT_EQ(openErrno(receive, O_RDONLY, kWorker), 0) << "a descendant";
  EXPECT_EQ(openErrno(receive, O_RDONLY, kRoot), 0);
  EXPECT_EQ(openErrno(receive, O_RDONLY, kShell), EACCES) << "a parent is not a descendant";
  EXPECT_EQ(openErrno(receive, O_RDONLY, kSibling), EACCES) << "same uid, unrelated";
  EXPECT_EQ(openErrno(statusIno(box), O_RDONLY, kSibling), EACCES);
  EXPECT_EQ(lookupErrno(box, "0000000001", kSibling), EACCES) << "no peeking";
  EXPECT_EQ(errnoOf(engine_.readdir(box, 0, [](const DirEntry&) { return true; }, kSibling)), EACCES);
  EXPECT_EQ(errnoOf(engine_.unlink(box, "0000000001", kSibling)), EACCES);
  EXPECT_EQ(lookupErrno(box, "0000000001", kWorker), 0);
  EXPECT_EQ(client_.list(box), std::vector<std::string>{"0000000001"}) << "refusals changed nothing";
}

TEST_F(ProcsTest, OnlyCallersThatCouldSignalTheProcessSend) {
  const uint64_t box = inbox(kAlice.pid, kStranger);
  ASSERT_NE(box, 0u) << "anyone may look a process up";
  EXPECT_EQ(openErrno(sendIno(box), O_WRONLY, kSibling), 0) << "same uid";
  EXPECT_EQ(openErrno(sendIno(box), O_WRONLY, kRoot), 0);
  EXPECT_EQ(openErrno(sendIno(box), O_WRONLY, kStranger), EACCES);
  EXPECT_EQ(errnoOf(engine_.create(box, "note.txt", 0644, O_WRONLY | O_CREAT, kStranger)), EACCES);
  EXPECT_EQ(errnoOf(engine_.create(box, "from", 0644, O_WRONLY | O_CREAT, kSibling)), EEXIST)
      << "from/ is taken in every inbox";
  const uint64_t mailbox = client_.mkdir("outbox", 0777);
  ASSERT_EQ(errnoOf(client_.send(mailbox, "forward me", kStranger)), 0);
  EXPECT_EQ(errnoOf(engine_.rename(mailbox, "0000000001", box, "fwd", 0, kStranger)), EACCES);
  EXPECT_EQ(errnoOf(engine_.rename(mailbox, "0000000001", box, "fwd", 0, kSibling)), 0);
  EXPECT_EQ(textOf(client_.receive(box)), "forward me");
}

TEST_F(ProcsTest, AnExitedProcessesInboxIsRetiredAndItsMessagesCounted) {
  constexpr Caller kChild{.pid = 4500, .uid = 1000, .gid = 1000};
  processes_->spawn(kChild.pid, kAlice.pid, 1000);
  const uint64_t box = inbox(kChild.pid);
  ASSERT_EQ(errnoOf(client_.send(box, "one", kAlice)), 0);
  ASSERT_EQ(errnoOf(client_.send(box, "two", kAlice)), 0);
  const uint64_t parentBox = inbox(kAlice.pid);
  const uint64_t rx = client_.openReceive(parentBox);
  ReadProbe waiting;  // kAlice waits on her own inbox; unaffected by the child's exit
  ASSERT_TRUE(client_.read(rx, kBigRead, false, waiting.callback()));
  auto childRx = engine_.open(receiveIno(box), O_RDONLY, kAlice);  // a parent cannot: root can
  EXPECT_EQ(errnoOf(childRx), EACCES);
  auto rootRx = engine_.open(receiveIno(box), O_RDONLY, kRoot);
  ASSERT_TRUE(rootRx);
  ASSERT_EQ(textOf(client_.readNow(rootRx->fh, 1)), "o") << "half-read when the process exits";

  processes_->exit(kChild.pid);
  engine_.reapExited();
  EXPECT_EQ(client_.rootStatusValue("inbox_discarded"), "1") << "the queued one; the half-read one is held";
  EXPECT_EQ(lookupErrno(ino::kProcs, "4500"), ENOENT);
  EXPECT_EQ(waiting.count(), 0u);
  engine_.release(rootRx->fh);
  EXPECT_EQ(client_.rootStatusValue("inbox_discarded"), "2") << "the half-read one, once given up";
  EXPECT_EQ(client_.rootStatusValue("messages"), "0");
  EXPECT_EQ(client_.rootStatusValue("bytes_held"), "0");
  engine_.release(rx);
}

TEST_F(ProcsTest, AReceiverWaitingOnAnExitedProcessGetsEidrm) {
  constexpr Caller kChild{.pid = 4600, .uid = 1000, .gid = 1000};
  processes_->spawn(kChild.pid, kAlice.pid, 1000);
  const uint64_t box = inbox(kAlice.pid);
  // The child waits on its parent's inbox; the parent exits.
  auto rx = engine_.open(receiveIno(box), O_RDONLY, kChild);
  ASSERT_TRUE(rx);
  ReadProbe waiting;
  ASSERT_TRUE(engine_.read(rx->fh, kBigRead, 0, false, kChild.pid, waiting.callback()));
  processes_->exit(kAlice.pid);
  engine_.reapExited();
  ASSERT_TRUE(waiting.waitForCount(1));
  EXPECT_EQ(errnoOf(waiting.result()), EIDRM);
  engine_.release(rx->fh);
}

TEST_F(ProcsTest, ARecycledPidStartsWithAnEmptyInbox) {
  constexpr pid_t kPid = 4700;
  processes_->spawn(kPid, kAlice.pid, 1000, /*instance=*/10);
  const uint64_t first = inbox(kPid);
  ASSERT_EQ(errnoOf(client_.send(first, "for the first one", kAlice)), 0);
  processes_->exit(kPid);
  processes_->spawn(kPid, kAlice.pid, 1000, /*instance=*/20);  // before any reaping
  const uint64_t second = inbox(kPid);
  ASSERT_NE(second, 0u);
  EXPECT_NE(second, first) << "a new instance, a new inode";
  EXPECT_EQ(client_.list(second), std::vector<std::string>{});
  EXPECT_EQ(client_.rootStatusValue("inbox_discarded"), "1");
}

TEST_F(ProcsTest, ProcsListsSelfAndTheInboxesInUse) {
  const uint64_t busy = inbox(kAlice.pid);
  (void)inbox(kWorker.pid);  // looked up, empty: not listed
  ASSERT_EQ(errnoOf(client_.send(busy, "hi", kWorker)), 0);
  EXPECT_EQ(listProcs(), (std::vector<std::string>{"self", "4242"}));
  EXPECT_EQ(client_.list(busy), std::vector<std::string>{"0000000001"}) << "from/ and control nodes unlisted";
  EXPECT_EQ(client_.rootStatusValue("inboxes"), "2");
  EXPECT_EQ(client_.list(client_.mkdir("plain")), std::vector<std::string>{});
  EXPECT_EQ(client_.rootStatusValue("mailboxes"), "1") << "inboxes are not mailboxes";
}

}  // namespace
}  // namespace ipcfs::test
