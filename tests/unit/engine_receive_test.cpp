// Receiving from mailboxes: message-at-a-time reads, parked (blocking) reads and their
// completion, cancel, redelivery after an early close, poll, rmdir and shutdown wake-ups,
// and many senders and receivers at once.
#include <gtest/gtest.h>

#include <fcntl.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "engine_fixture.hpp"
#include "ipcfs/engine.hpp"
#include "ipcfs/inode.hpp"

namespace ipcfs::test {
namespace {

using ReceiveTest = EngineTest;

// --- taking messages ------------------------------------------------------------------

TEST_F(ReceiveTest, ReadTakesTheOldestAndContinuesItUntilEndOfMessage) {
  const uint64_t box = client_.mkdir("a");
  ASSERT_EQ(errnoOf(client_.send(box, "hello")), 0);
  ASSERT_EQ(errnoOf(client_.send(box, "world")), 0);
  const uint64_t rx = client_.openReceive(box);
  EXPECT_EQ(textOf(client_.readNow(rx, 2)), "he");
  EXPECT_EQ(client_.list(box), std::vector<std::string>{"0000000002"}) << "a taken message is not listed";
  EXPECT_EQ(textOf(client_.readNow(rx, 2)), "ll");
  EXPECT_EQ(textOf(client_.readNow(rx, 2)), "o");
  EXPECT_EQ(textOf(client_.readNow(rx, 2)), "") << "end of message";
  EXPECT_EQ(textOf(client_.readNow(rx, 100)), "world");
  EXPECT_EQ(textOf(client_.readNow(rx, 100)), "");
  EXPECT_EQ(errnoOf(client_.readNow(rx, 100)), EAGAIN);
  engine_.release(rx);
  EXPECT_TRUE(client_.list(box).empty());
}

TEST_F(ReceiveTest, ReadOfExactlyTheMessageSizeIsFollowedByEndOfMessage) {
  const uint64_t box = client_.mkdir("a");
  ASSERT_EQ(errnoOf(client_.send(box, "abcd")), 0);
  ASSERT_EQ(errnoOf(client_.send(box, "efgh")), 0);
  const uint64_t rx = client_.openReceive(box);
  EXPECT_EQ(textOf(client_.readNow(rx, 4)), "abcd");
  EXPECT_EQ(textOf(client_.readNow(rx, 4)), "");
  EXPECT_EQ(textOf(client_.readNow(rx, 4)), "efgh");
  EXPECT_EQ(textOf(client_.readNow(rx, 4)), "");
  engine_.release(rx);
}

TEST_F(ReceiveTest, EachCatReceivesExactlyOneMessage) {
  const uint64_t box = client_.mkdir("a");
  for (const char* m : {"one\n", "two\n", "three\n"}) ASSERT_EQ(errnoOf(client_.send(box, m)), 0);
  EXPECT_EQ(textOf(client_.receive(box, 3)), "one\n");
  EXPECT_EQ(textOf(client_.receive(box, 3)), "two\n");
  EXPECT_EQ(textOf(client_.receive(box, 3)), "three\n");
  EXPECT_EQ(errnoOf(client_.receive(box)), EAGAIN);
}

TEST_F(ReceiveTest, MessageIsGoneOnceItsLastByteIsRead) {
  const uint64_t box = client_.mkdir("a");
  ASSERT_EQ(errnoOf(client_.send(box, "done")), 0);
  const uint64_t rx = client_.openReceive(box);
  ASSERT_EQ(textOf(client_.readNow(rx)), "done");
  engine_.release(rx);  // closed before reading the end-of-message 0
  EXPECT_TRUE(client_.list(box).empty());
  EXPECT_EQ(errnoOf(client_.receive(box)), EAGAIN) << "a fully read message must not come back";
  EXPECT_EQ(client_.rootStatusValue("bytes_held"), "0");
}

TEST_F(ReceiveTest, ZeroLengthMessageReadsAsAnImmediateEndOfMessage) {
  const uint64_t box = client_.mkdir("a");
  auto created = client_.create(box, "empty", O_WRONLY | O_CREAT);
  ASSERT_TRUE(created);
  engine_.release(created->second.fh);
  ASSERT_EQ(errnoOf(client_.send(box, "x")), 0);
  const uint64_t rx = client_.openReceive(box);
  EXPECT_EQ(textOf(client_.readNow(rx)), "") << "the empty message";
  EXPECT_EQ(client_.list(box), std::vector<std::string>{"0000000002"}) << "the empty message was taken";
  EXPECT_EQ(textOf(client_.readNow(rx)), "x");
  EXPECT_EQ(textOf(client_.readNow(rx)), "");
  EXPECT_EQ(errnoOf(client_.readNow(rx)), EAGAIN);
  engine_.release(rx);
}

TEST_F(ReceiveTest, NonblockingReadOnAnEmptyMailboxFailsWithEAGAIN) {
  const uint64_t box = client_.mkdir("a");
  const uint64_t rx = client_.openReceive(box);
  EXPECT_EQ(errnoOf(client_.readNow(rx)), EAGAIN);
  EXPECT_EQ(client_.rootStatusValue("receivers_waiting"), "0");
  engine_.release(rx);
}

// --- parked reads ---------------------------------------------------------------------

TEST_F(ReceiveTest, ParkedReadIsCompletedByTheDeliveringCall) {
  const uint64_t box = client_.mkdir("a");
  const uint64_t rx = client_.openReceive(box);
  ReadProbe probe;
  auto id = client_.read(rx, kBigRead, false, probe.callback());
  ASSERT_TRUE(id.has_value());
  EXPECT_EQ(probe.count(), 0u);
  EXPECT_EQ(client_.rootStatusValue("receivers_waiting"), "1");
  ASSERT_EQ(errnoOf(client_.send(box, "ping")), 0);
  ASSERT_EQ(probe.count(), 1u) << "completed before the delivering call returned";
  EXPECT_EQ(probe.thread(), std::this_thread::get_id());
  EXPECT_EQ(textOf(probe.result()), "ping");
  EXPECT_EQ(client_.rootStatusValue("receivers_waiting"), "0");
  EXPECT_TRUE(client_.list(box).empty()) << "handed over, not queued";
  EXPECT_EQ(textOf(client_.readNow(rx)), "") << "end of the handed-over message";
  engine_.release(rx);
}

TEST_F(ReceiveTest, ParkedReadIsCompletedOnTheSendersThread) {
  const uint64_t box = client_.mkdir("a");
  const uint64_t rx = client_.openReceive(box);
  ReadProbe probe;
  ASSERT_TRUE(client_.read(rx, kBigRead, false, probe.callback()).has_value());
  std::thread::id senderThread;
  std::thread sender([&] {
    senderThread = std::this_thread::get_id();
    EXPECT_EQ(errnoOf(client_.send(box, "from afar")), 0);
  });
  sender.join();
  ASSERT_EQ(probe.count(), 1u);
  EXPECT_EQ(probe.thread(), senderThread);
  EXPECT_EQ(textOf(probe.result()), "from afar");
  engine_.release(rx);
}

TEST_F(ReceiveTest, ParkedReadOfASmallSizeTakesTheMessageAndLaterReadsContinueIt) {
  const uint64_t box = client_.mkdir("a");
  const uint64_t rx = client_.openReceive(box);
  ReadProbe probe;
  ASSERT_TRUE(client_.read(rx, 2, false, probe.callback()).has_value());
  ASSERT_EQ(errnoOf(client_.send(box, "hello")), 0);
  ASSERT_EQ(probe.count(), 1u);
  EXPECT_EQ(textOf(probe.result()), "he");
  EXPECT_EQ(textOf(client_.readNow(rx)), "llo");
  EXPECT_EQ(textOf(client_.readNow(rx)), "");
  engine_.release(rx);
}

TEST_F(ReceiveTest, ParkedReadersAreServedLongestWaitingFirstEachExactlyOnce) {
  const uint64_t box = client_.mkdir("a");
  constexpr size_t kReaders = 3;
  std::vector<uint64_t> rx;
  std::vector<std::unique_ptr<ReadProbe>> probes;
  for (size_t i = 0; i < kReaders; ++i) {
    rx.push_back(client_.openReceive(box));
    probes.push_back(std::make_unique<ReadProbe>());
    ASSERT_TRUE(client_.read(rx[i], kBigRead, false, probes[i]->callback()).has_value());
  }
  for (size_t i = 0; i < kReaders; ++i) {
    ASSERT_EQ(errnoOf(client_.send(box, "m" + std::to_string(i))), 0);
    for (size_t j = 0; j < kReaders; ++j)
      EXPECT_EQ(probes[j]->count(), j <= i ? 1u : 0u) << "after message " << i << ", reader " << j;
  }
  for (size_t i = 0; i < kReaders; ++i) EXPECT_EQ(textOf(probes[i]->result()), "m" + std::to_string(i));
  ASSERT_EQ(errnoOf(client_.send(box, "nobody waits")), 0);
  EXPECT_EQ(client_.list(box).size(), 1u);
  for (size_t i = 0; i < kReaders; ++i) EXPECT_EQ(probes[i]->count(), 1u);
  for (uint64_t fh : rx) engine_.release(fh);
}

TEST_F(ReceiveTest, CompletionMayCallBackIntoTheEngine) {
  const uint64_t box = client_.mkdir("a");
  const uint64_t rx = client_.openReceive(box);
  std::string endOfMessage = "unset";
  std::string status;
  ReadCompletion reentrant = [&](Result<Bytes> r) {
    ASSERT_TRUE(r);
    status = engine_.rootStatus();
    endOfMessage = textOf(client_.readNow(rx));
  };
  ASSERT_TRUE(client_.read(rx, kBigRead, false, reentrant).has_value());
  ASSERT_EQ(errnoOf(client_.send(box, "x")), 0);
  EXPECT_EQ(endOfMessage, "");
  EXPECT_FALSE(status.empty());
  engine_.release(rx);
}

// --- cancel ---------------------------------------------------------------------------

TEST_F(ReceiveTest, CancelCompletesAParkedReadWithEINTRExactlyOnce) {
  const uint64_t box = client_.mkdir("a");
  const uint64_t rx = client_.openReceive(box);
  ReadProbe probe;
  auto id = client_.read(rx, kBigRead, false, probe.callback());
  ASSERT_TRUE(id.has_value());
  engine_.cancel(*id);
  ASSERT_EQ(probe.count(), 1u);
  EXPECT_EQ(errnoOf(probe.result()), EINTR);
  engine_.cancel(*id);
  EXPECT_EQ(probe.count(), 1u) << "a second cancel completes nothing";
  EXPECT_EQ(client_.rootStatusValue("receivers_waiting"), "0");

  ASSERT_EQ(errnoOf(client_.send(box, "later")), 0);
  EXPECT_EQ(probe.count(), 1u) << "the cancelled read must not consume a later delivery";
  EXPECT_EQ(client_.list(box), std::vector<std::string>{"0000000001"});
  EXPECT_EQ(textOf(client_.readNow(rx)), "later") << "the same open file can read again";
  engine_.release(rx);
}

TEST_F(ReceiveTest, CancelAfterCompletionIsANoOp) {
  const uint64_t box = client_.mkdir("a");
  const uint64_t rx = client_.openReceive(box);
  ReadProbe probe;
  auto id = client_.read(rx, kBigRead, false, probe.callback());
  ASSERT_TRUE(id.has_value());
  ASSERT_EQ(errnoOf(client_.send(box, "got it")), 0);
  ASSERT_EQ(probe.count(), 1u);
  engine_.cancel(*id);
  EXPECT_EQ(probe.count(), 1u);
  EXPECT_EQ(textOf(probe.result()), "got it");
  EXPECT_TRUE(client_.list(box).empty()) << "cancel must not put a completed message back";
  engine_.release(rx);
  EXPECT_EQ(errnoOf(client_.receive(box)), EAGAIN);
}

TEST_F(ReceiveTest, CancelOfAnUnknownWaiterIsANoOp) {
  const uint64_t box = client_.mkdir("a");
  const uint64_t rx = client_.openReceive(box);
  ReadProbe probe;
  auto id = client_.read(rx, kBigRead, false, probe.callback());
  ASSERT_TRUE(id.has_value());
  engine_.cancel(*id + 1000);
  EXPECT_EQ(probe.count(), 0u);
  engine_.cancel(*id);
  EXPECT_EQ(probe.count(), 1u);
  engine_.release(rx);
}

TEST_F(ReceiveTest, CancellingOneOfSeveralParkedReadsLeavesTheOthersInOrder) {
  const uint64_t box = client_.mkdir("a");
  const uint64_t rx1 = client_.openReceive(box);
  const uint64_t rx2 = client_.openReceive(box);
  const uint64_t rx3 = client_.openReceive(box);
  ReadProbe p1, p2, p3;
  ASSERT_TRUE(client_.read(rx1, kBigRead, false, p1.callback()).has_value());
  auto id2 = client_.read(rx2, kBigRead, false, p2.callback());
  ASSERT_TRUE(id2.has_value());
  ASSERT_TRUE(client_.read(rx3, kBigRead, false, p3.callback()).has_value());
  engine_.cancel(*id2);
  ASSERT_EQ(errnoOf(client_.send(box, "a")), 0);
  ASSERT_EQ(errnoOf(client_.send(box, "b")), 0);
  EXPECT_EQ(textOf(p1.result()), "a");
  EXPECT_EQ(errnoOf(p2.result()), EINTR);
  EXPECT_EQ(textOf(p3.result()), "b");
  EXPECT_EQ(p1.count() + p2.count() + p3.count(), 3u);
  for (uint64_t fh : {rx1, rx2, rx3}) engine_.release(fh);
}

// --- redelivery -----------------------------------------------------------------------

TEST_F(ReceiveTest, ReleaseMidMessageRequeuesItAtTheHeadCountingRedeliveries) {
  const uint64_t box = client_.mkdir("a");
  ASSERT_EQ(errnoOf(client_.send(box, "first")), 0);
  ASSERT_EQ(errnoOf(client_.send(box, "second")), 0);
  const uint64_t before = client_.inoOf(box, "0000000001");
  for (int attempt = 1; attempt <= 2; ++attempt) {
    const uint64_t rx = client_.openReceive(box);
    ASSERT_EQ(textOf(client_.readNow(rx, 2)), "fi");
    engine_.release(rx);
    EXPECT_EQ(client_.list(box), (std::vector<std::string>{"0000000001", "0000000002"}));
    const uint64_t msg = client_.inoOf(box, "0000000001");
    EXPECT_EQ(msg, before) << "the same message comes back";
    EXPECT_EQ(client_.xattr(msg, "user.ipc.redeliveries"), std::to_string(attempt));
  }
  EXPECT_EQ(textOf(client_.receive(box)), "first") << "redelivered whole, from its first byte";
  EXPECT_EQ(textOf(client_.receive(box)), "second");
}

TEST_F(ReceiveTest, RequeuedMessageIsHandedToAParkedReceiver) {
  const uint64_t box = client_.mkdir("a");
  ASSERT_EQ(errnoOf(client_.send(box, "job")), 0);
  const uint64_t rx1 = client_.openReceive(box);
  ASSERT_EQ(textOf(client_.readNow(rx1, 1)), "j");
  const uint64_t rx2 = client_.openReceive(box);
  ReadProbe probe;
  ASSERT_TRUE(client_.read(rx2, kBigRead, false, probe.callback()).has_value());
  EXPECT_EQ(probe.count(), 0u);
  engine_.release(rx1);
  ASSERT_EQ(probe.count(), 1u) << "the release hands the message over";
  EXPECT_EQ(textOf(probe.result()), "job");
  EXPECT_TRUE(client_.list(box).empty());
  EXPECT_EQ(textOf(client_.readNow(rx2)), "");
  engine_.release(rx2);
}

TEST_F(ReceiveTest, RmdirIsRefusedWhileAMessageIsInFlight) {
  const uint64_t box = client_.mkdir("a");
  ASSERT_EQ(errnoOf(client_.send(box, "busy")), 0);
  const uint64_t rx = client_.openReceive(box);
  ASSERT_EQ(textOf(client_.readNow(rx, 1)), "b");
  EXPECT_TRUE(client_.list(box).empty());
  EXPECT_EQ(errnoOf(engine_.rmdir(ino::kMailboxes, "a")), ENOTEMPTY);
  engine_.release(rx);
  EXPECT_EQ(textOf(client_.receive(box)), "busy");
  EXPECT_EQ(errnoOf(engine_.rmdir(ino::kMailboxes, "a")), 0);
}

// --- poll -----------------------------------------------------------------------------

TEST_F(ReceiveTest, PollNotifyFiresOnceWhenAMessageArrives) {
  const uint64_t box = client_.mkdir("a");
  const uint64_t rx = client_.openReceive(box);
  int fired = 0;
  auto readable = engine_.poll(rx, [&] { ++fired; });
  ASSERT_TRUE(readable);
  EXPECT_FALSE(*readable);
  EXPECT_EQ(fired, 0);
  ASSERT_EQ(errnoOf(client_.send(box, "wake")), 0);
  EXPECT_EQ(fired, 1);
  ASSERT_EQ(errnoOf(client_.send(box, "again")), 0);
  EXPECT_EQ(fired, 1) << "notifications are one-shot";
  readable = engine_.poll(rx, [&] { ++fired; });
  ASSERT_TRUE(readable);
  EXPECT_TRUE(*readable);
  engine_.release(rx);
}

TEST_F(ReceiveTest, PollNotifyIsDroppedOnRelease) {
  const uint64_t box = client_.mkdir("a");
  const uint64_t rx = client_.openReceive(box);
  int fired = 0;
  ASSERT_TRUE(engine_.poll(rx, [&] { ++fired; }));
  engine_.release(rx);
  ASSERT_EQ(errnoOf(client_.send(box, "nobody polls")), 0);
  EXPECT_EQ(fired, 0);
}

TEST_F(ReceiveTest, LaterPollReplacesTheEarlierNotify) {
  const uint64_t box = client_.mkdir("a");
  const uint64_t rx = client_.openReceive(box);
  int first = 0;
  int second = 0;
  ASSERT_TRUE(engine_.poll(rx, [&] { ++first; }));
  ASSERT_TRUE(engine_.poll(rx, [&] { ++second; }));
  ASSERT_EQ(errnoOf(client_.send(box, "x")), 0);
  EXPECT_EQ(first, 0);
  EXPECT_EQ(second, 1);
  engine_.release(rx);
}

TEST_F(ReceiveTest, PollIsReadableWhileAMessageIsHalfRead) {
  const uint64_t box = client_.mkdir("a");
  ASSERT_EQ(errnoOf(client_.send(box, "abc")), 0);
  const uint64_t rx = client_.openReceive(box);
  ASSERT_EQ(textOf(client_.readNow(rx, 1)), "a");
  auto readable = engine_.poll(rx, nullptr);
  ASSERT_TRUE(readable);
  EXPECT_TRUE(*readable);
  ASSERT_EQ(textOf(client_.readNow(rx)), "bc");
  readable = engine_.poll(rx, nullptr);
  ASSERT_TRUE(readable);
  EXPECT_TRUE(*readable) << "the end-of-message 0 is still to be read";
  ASSERT_EQ(textOf(client_.readNow(rx)), "");
  readable = engine_.poll(rx, nullptr);
  ASSERT_TRUE(readable);
  EXPECT_FALSE(*readable);
  engine_.release(rx);
}

TEST_F(ReceiveTest, DropInBeingWrittenDoesNotWakePollers) {
  const uint64_t box = client_.mkdir("a");
  const uint64_t rx = client_.openReceive(box);
  int fired = 0;
  ASSERT_TRUE(engine_.poll(rx, [&] { ++fired; }));
  auto created = client_.create(box, "note", O_WRONLY | O_CREAT);
  ASSERT_TRUE(created);
  ASSERT_EQ(errnoOf(client_.write(created->second.fh, "x", 0)), 0);
  EXPECT_EQ(fired, 0);
  engine_.release(created->second.fh);
  EXPECT_EQ(fired, 1);
  engine_.release(rx);
}

// --- rmdir and shutdown wake parked readers -------------------------------------------

TEST_F(ReceiveTest, RmdirCompletesAParkedReceiverWithEIDRM) {
  const uint64_t box = client_.mkdir("a");
  const uint64_t rx = client_.openReceive(box);
  ReadProbe probe;
  auto id = client_.read(rx, kBigRead, false, probe.callback());
  ASSERT_TRUE(id.has_value());
  int fired = 0;
  const uint64_t poller = client_.openReceive(box);
  ASSERT_TRUE(engine_.poll(poller, [&] { ++fired; }));
  ASSERT_EQ(errnoOf(engine_.rmdir(ino::kMailboxes, "a")), 0);
  ASSERT_EQ(probe.count(), 1u);
  EXPECT_EQ(errnoOf(probe.result()), EIDRM);
  EXPECT_EQ(fired, 1) << "pollers learn that the mailbox is gone";
  engine_.cancel(*id);
  EXPECT_EQ(probe.count(), 1u);
  EXPECT_EQ(errnoOf(client_.readNow(rx)), EIDRM) << "later reads on the open file";
  EXPECT_EQ(client_.rootStatusValue("receivers_waiting"), "0");
  engine_.release(rx);
  engine_.release(poller);
}

TEST_F(ReceiveTest, ShutdownCompletesEveryParkedReaderWithESHUTDOWN) {
  const uint64_t a = client_.mkdir("a");
  const uint64_t b = client_.mkdir("b");
  const uint64_t rxA = client_.openReceive(a);
  const uint64_t rxB = client_.openReceive(b);
  ReadProbe probeA, probeB;
  auto idA = client_.read(rxA, kBigRead, false, probeA.callback());
  ASSERT_TRUE(idA.has_value());
  ASSERT_TRUE(client_.read(rxB, kBigRead, false, probeB.callback()).has_value());
  int fired = 0;
  const uint64_t poller = client_.openReceive(a);
  ASSERT_TRUE(engine_.poll(poller, [&] { ++fired; }));
  engine_.shutdown();
  ASSERT_EQ(probeA.count(), 1u);
  ASSERT_EQ(probeB.count(), 1u);
  EXPECT_EQ(errnoOf(probeA.result()), ESHUTDOWN);
  EXPECT_EQ(errnoOf(probeB.result()), ESHUTDOWN);
  engine_.cancel(*idA);
  EXPECT_EQ(probeA.count(), 1u);
  EXPECT_EQ(errnoOf(client_.readNow(rxA, kBigRead, false)), ESHUTDOWN) << "a later blocking read must not park";
  (void)client_.send(a, "after");
  EXPECT_EQ(fired, 0) << "poll notifications are dropped by shutdown";
  for (uint64_t fh : {rxA, rxB, poller}) engine_.release(fh);
}

// --- many threads ---------------------------------------------------------------------

// A blocking read done the way the adapter does it: park, then wait (with a deadline) for
// the completion, which may arrive on any thread, even before read() has returned.
struct BlockingRead {
  struct Slot {
    std::mutex mutex;
    std::condition_variable cv;
    std::optional<Result<std::string>> value;
    int completions = 0;
  };

  static Result<std::string> run(Engine& engine, uint64_t fh, std::chrono::steady_clock::time_point deadline,
                                 std::atomic<int>& doubleCompletions) {
    auto slot = std::make_shared<Slot>();
    auto id = engine.read(fh, kBigRead, 0, false, kAlice.pid, [slot, &doubleCompletions](Result<Bytes> r) {
      std::lock_guard lock(slot->mutex);
      if (++slot->completions > 1) ++doubleCompletions;
      if (r) {
        slot->value.emplace(std::string(r->view));
      } else {
        slot->value.emplace(std::unexpected(r.error()));
      }
      slot->cv.notify_all();
    });
    std::unique_lock lock(slot->mutex);
    if (slot->cv.wait_until(lock, deadline, [&] { return slot->value.has_value(); })) return *slot->value;
    lock.unlock();
    if (id) engine.cancel(*id);
    lock.lock();
    slot->cv.wait_for(lock, 10s, [&] { return slot->value.has_value(); });
    return std::unexpected(std::errc::timed_out);
  }
};

TEST(EngineConcurrencyTest, FourSendersAndFourReceiversPassEveryMessageExactlyOnce) {
  constexpr int kSenders = 4;
  constexpr int kReceivers = 4;
  constexpr int kPerSender = 5000;
  constexpr int kTotal = kSenders * kPerSender;
  Engine engine;
  EngineClient client(engine);
  const uint64_t box = client.mkdir("load");
  const auto deadline = std::chrono::steady_clock::now() + 120s;

  std::atomic<int> received{0};
  std::atomic<int> doubleCompletions{0};
  std::mutex progressMutex;
  std::condition_variable progressCv;
  std::vector<std::vector<std::string>> got(kReceivers);
  std::vector<std::string> receiverErrors(kReceivers);
  std::vector<std::string> senderErrors(kSenders);

  std::vector<std::thread> threads;
  for (int r = 0; r < kReceivers; ++r) {
    threads.emplace_back([&, r] {
      auto opened = engine.open(receiveIno(box), O_RDONLY, kAlice);
      if (!opened) {
        receiverErrors[r] = "open failed";
        return;
      }
      std::string current;
      for (;;) {
        auto chunk = BlockingRead::run(engine, opened->fh, deadline, doubleCompletions);
        if (!chunk) {
          if (chunk.error() != static_cast<std::errc>(ESHUTDOWN))
            receiverErrors[r] = "read failed: errno " + std::to_string(static_cast<int>(chunk.error()));
          break;
        }
        if (!chunk->empty()) {
          current += *chunk;
          continue;
        }
        got[r].push_back(std::move(current));  // end of message
        current.clear();
        if (received.fetch_add(1) + 1 == kTotal) {
          std::lock_guard lock(progressMutex);
          progressCv.notify_all();
        }
      }
      engine.release(opened->fh);
    });
  }
  for (int s = 0; s < kSenders; ++s) {
    threads.emplace_back([&, s] {
      const Caller me{.pid = 100 + s, .uid = 1000, .gid = 1000};
      auto opened = engine.open(sendIno(box), O_WRONLY, me);
      if (!opened) {
        senderErrors[s] = "open failed";
        return;
      }
      for (int i = 0; i < kPerSender; ++i) {
        const std::string text = std::to_string(s) + ":" + std::to_string(i);
        std::optional<Result<size_t>> w;
        auto writeParked = engine.write(opened->fh, text, 0, false, me, [&](Result<size_t> r) { w.emplace(r); });
        if (writeParked) engine.cancel(*writeParked);  // a .send write never waits
        std::optional<Status> flushed;
        auto parked = engine.flush(opened->fh, [&](Status st) { flushed.emplace(st); });
        if (parked) engine.cancel(*parked);  // an unlimited mailbox never makes a sender wait
        if (!w || !*w || !flushed || !*flushed) {
          senderErrors[s] = "send " + text + " failed";
          break;
        }
      }
      engine.release(opened->fh);
    });
  }

  {
    std::unique_lock lock(progressMutex);
    EXPECT_TRUE(progressCv.wait_until(lock, deadline, [&] { return received.load() >= kTotal; }))
        << "only " << received.load() << " of " << kTotal << " messages arrived";
  }
  engine.shutdown();  // wakes the receivers still parked
  for (auto& t : threads) t.join();

  for (int s = 0; s < kSenders; ++s) EXPECT_EQ(senderErrors[s], "") << "sender " << s;
  for (int r = 0; r < kReceivers; ++r) EXPECT_EQ(receiverErrors[r], "") << "receiver " << r;
  EXPECT_EQ(doubleCompletions.load(), 0) << "a read completed more than once";

  std::set<std::string> seen;
  int duplicates = 0;
  for (int r = 0; r < kReceivers; ++r) {
    std::vector<int> lastFromSender(kSenders, -1);
    for (const std::string& m : got[r]) {
      if (!seen.insert(m).second) ++duplicates;
      const auto colon = m.find(':');
      ASSERT_NE(colon, std::string::npos) << "mangled message '" << m << "'";
      const int s = std::stoi(m.substr(0, colon));
      const int i = std::stoi(m.substr(colon + 1));
      ASSERT_TRUE(s >= 0 && s < kSenders) << m;
      EXPECT_GT(i, lastFromSender[s]) << "receiver " << r << " got sender " << s << "'s messages out of order";
      lastFromSender[s] = i;
    }
  }
  EXPECT_EQ(duplicates, 0);
  EXPECT_EQ(seen.size(), static_cast<size_t>(kTotal));
  EXPECT_EQ(client.rootStatusValue("messages"), "0");
  EXPECT_EQ(client.rootStatusValue("bytes_held"), "0");
}

}  // namespace
}  // namespace ipcfs::test
