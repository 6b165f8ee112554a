// The durable store's formats and files: frames (a torn last write is dropped, damage
// anywhere else is refused), snapshots (checksummed whole), the directory lock, and a journal
// read back after a simulated crash.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "journal.hpp"

namespace ipcfs::durable {
namespace {

namespace fs = std::filesystem;

std::string records(std::initializer_list<std::pair<uint8_t, std::string>> list) {
  std::string out;
  for (const auto& [type, body] : list) appendRecord(out, type, body);
  return out;
}

std::vector<std::pair<int, std::string>> decode(std::string_view recs) {
  std::vector<std::pair<int, std::string>> out;
  auto r = forEachRecord(recs, [&](const Record& rec) {
    out.emplace_back(rec.type, std::string(rec.body));
    return Check{};
  });
  EXPECT_TRUE(r) << (r ? "" : r.error());
  return out;
}

// A temporary state directory, removed afterwards.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "ipcfs-journal-test.XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data()) ? tmpl : "";
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void spit(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
}

TEST(JournalFrames, IntactFramesGiveBackTheirRecordsInOrder) {
  const std::string a = records({{1, "one"}, {2, "two"}}), b = records({{3, ""}});
  const std::string file = encodeFrame(a) + encodeFrame(b);
  auto scan = scanFrames(file);
  ASSERT_TRUE(scan) << scan.error();
  EXPECT_EQ(scan->tornBytes, 0u);
  EXPECT_EQ(scan->validEnd, file.size());
  EXPECT_EQ(decode(scan->records), (std::vector<std::pair<int, std::string>>{{1, "one"}, {2, "two"}, {3, ""}}));
}

TEST(JournalFrames, ALastFrameCutShortIsATornTailAndIsDropped) {
  const std::string first = encodeFrame(records({{1, "kept"}}));
  const std::string last = encodeFrame(records({{2, "cut short"}}));
  for (size_t keep : {size_t{1}, size_t{10}, last.size() - 1}) {
    const std::string file = first + last.substr(0, keep);
    auto scan = scanFrames(file);
    ASSERT_TRUE(scan) << "keeping " << keep << " bytes: " << scan.error();
    EXPECT_EQ(scan->validEnd, first.size());
    EXPECT_EQ(scan->tornBytes, keep);
    EXPECT_EQ(decode(scan->records), (std::vector<std::pair<int, std::string>>{{1, "kept"}}));
  }
}

TEST(JournalFrames, ZerosAfterTheLastFrameAreATornTail) {
  const std::string first = encodeFrame(records({{1, "kept"}}));
  auto scan = scanFrames(first + std::string(4096, '\0'));
  ASSERT_TRUE(scan) << scan.error();
  EXPECT_EQ(scan->validEnd, first.size());
  EXPECT_EQ(scan->tornBytes, 4096u);
}

TEST(JournalFrames, ALastFrameWhoseRecordsFailTheirChecksumIsATornTail) {
  const std::string first = encodeFrame(records({{1, "kept"}}));
  std::string last = encodeFrame(records({{2, "partly written"}}));
  last[last.size() - 3] = '\0';  // a page of it never reached the disk
  auto scan = scanFrames(first + last);
  ASSERT_TRUE(scan) << scan.error();
  EXPECT_EQ(scan->validEnd, first.size());
  EXPECT_EQ(scan->tornBytes, last.size());
}

TEST(JournalFrames, ABadChecksumBeforeTheLastFrameIsRefused) {
  std::string middle = encodeFrame(records({{2, "damaged"}}));
  middle[middle.size() - 2] ^= 0x40;
  const std::string first = encodeFrame(records({{1, "a"}}));
  const std::string file = first + middle + encodeFrame(records({{3, "after"}}));
  auto scan = scanFrames(file);
  ASSERT_FALSE(scan);
  EXPECT_NE(scan.error().find("byte " + std::to_string(first.size())), std::string::npos) << scan.error();
  EXPECT_NE(scan.error().find("checksum"), std::string::npos) << scan.error();
}

TEST(JournalFrames, ADamagedFrameLengthIsRefusedNotTakenForATornTail) {
  std::string middle = encodeFrame(records({{2, "its length is damaged"}}));
  middle[3] = '\x7f';  // a huge length would otherwise look like a last frame cut short
  const std::string file = encodeFrame(records({{1, "a"}})) + middle + encodeFrame(records({{3, "after"}}));
  auto scan = scanFrames(file);
  ASSERT_FALSE(scan);
  EXPECT_NE(scan.error().find("header"), std::string::npos) << scan.error();
}

TEST(JournalFrames, ARecordRunningPastItsFrameIsRefused) {
  std::string recs = records({{1, "abc"}});
  recs.pop_back();  // the record says 3 bytes, the frame holds 2
  const std::string file = encodeFrame(recs) + encodeFrame(records({{2, "x"}}));
  EXPECT_FALSE(scanFrames(file));
}

TEST(JournalSnapshot, RoundTripsAndRefusesTruncationOrDamage) {
  const std::string recs = records({{1, "state"}, {2, std::string(1000, 'x')}});
  const std::string file = encodeSnapshot(7, recs);
  auto view = parseSnapshot(file);
  ASSERT_TRUE(view) << view.error();
  EXPECT_EQ(view->generation, 7u);
  EXPECT_EQ(view->records, recs);

  for (size_t cut : {size_t{0}, size_t{5}, file.size() / 2, file.size() - 1}) {
    auto truncated = parseSnapshot(std::string_view(file).substr(0, cut));
    EXPECT_FALSE(truncated) << "cut at " << cut;
  }
  std::string flipped = file;
  flipped[flipped.size() / 2] ^= 1;
  auto damaged = parseSnapshot(flipped);
  ASSERT_FALSE(damaged);
  EXPECT_NE(damaged.error().find("checksum"), std::string::npos) << damaged.error();
}

std::string joined(const Journal::Loaded& loaded) {
  return std::string(loaded.snapshotRecords) + loaded.journalRecords;
}

TEST(JournalFiles, WhatWasDurableIsReadBackAndATornTailIsTruncatedAway) {
  TempDir dir;
  {
    Journal::Loaded loaded;
    auto j = Journal::open(dir.path(), {}, loaded);
    ASSERT_TRUE(j) << j.error();
    EXPECT_TRUE(joined(loaded).empty());
    (*j)->start();
    (*j)->append(1, "first");
    (*j)->append(2, "second");
    (*j)->waitDurable(2);
    // A crash: the files as they are now, without a final snapshot.
    fs::copy(dir.path(), dir.path() + "/crashed");
  }
  const std::string crashed = dir.file("crashed");
  fs::remove(crashed + "/LOCK");
  const std::string journal = crashed + "/journal.0";
  const std::string intact = slurp(journal);
  spit(journal, intact + encodeFrame(records({{3, "never acknowledged"}})).substr(0, 20));

  Journal::Loaded loaded;
  auto j = Journal::open(crashed, {}, loaded);
  ASSERT_TRUE(j) << j.error();
  EXPECT_EQ(decode(joined(loaded)), (std::vector<std::pair<int, std::string>>{{1, "first"}, {2, "second"}}));
  EXPECT_NE(loaded.notes.find("dropped 20 bytes"), std::string::npos) << loaded.notes;
  EXPECT_EQ(slurp(journal), intact) << "the torn tail is cut off the file";
}

TEST(JournalFiles, ASnapshotReplacesTheJournalAndLaterRecordsFollowIt) {
  TempDir dir;
  {
    Journal::Loaded loaded;
    auto j = Journal::open(dir.path(), {}, loaded);
    ASSERT_TRUE(j) << j.error();
    (*j)->start();
    (*j)->append(1, "before");
    (*j)->snapshot(records({{9, "the state"}}));
    (*j)->append(2, "after");
    (*j)->waitDurable(2);
  }
  EXPECT_FALSE(fs::exists(dir.file("journal.0"))) << "the journal before the snapshot is gone";
  Journal::Loaded loaded;
  auto j = Journal::open(dir.path(), {}, loaded);
  ASSERT_TRUE(j) << j.error();
  EXPECT_EQ(loaded.generation, 1u);
  EXPECT_EQ(decode(joined(loaded)), (std::vector<std::pair<int, std::string>>{{9, "the state"}, {2, "after"}}));
}

TEST(JournalFiles, DamageIsRefusedWithTheFileNamed) {
  TempDir dir;
  {
    Journal::Loaded loaded;
    auto j = Journal::open(dir.path(), {}, loaded);
    ASSERT_TRUE(j) << j.error();
    for (uint64_t i = 1; i <= 5; ++i) {
      (*j)->append(1, "record " + std::to_string(i));
      (*j)->waitDurable(i);  // one frame each
    }
  }
  std::string file = slurp(dir.file("journal.0"));
  file[file.size() / 2] ^= 0x10;
  spit(dir.file("journal.0"), file);
  Journal::Loaded loaded;
  auto j = Journal::open(dir.path(), {}, loaded);
  ASSERT_FALSE(j);
  EXPECT_NE(j.error().find("journal.0"), std::string::npos) << j.error();
  EXPECT_NE(j.error().find("damaged"), std::string::npos) << j.error();
}

TEST(JournalFiles, OneDaemonPerDirectory) {
  TempDir dir;
  Journal::Loaded first, second;
  auto a = Journal::open(dir.path(), {}, first);
  ASSERT_TRUE(a) << a.error();
  auto b = Journal::open(dir.path(), {}, second);
  ASSERT_FALSE(b);
  EXPECT_NE(b.error().find("in use"), std::string::npos) << b.error();
}

TEST(JournalFiles, ConcurrentAppendsShareSyncsAndAllBecomeDurable) {
  TempDir dir;
  Journal::Loaded loaded;
  auto j = Journal::open(dir.path(), {}, loaded);
  ASSERT_TRUE(j) << j.error();
  (*j)->start();
  std::mutex serial;  // the engine's mutex, in the engine
  std::vector<std::thread> threads;
  std::atomic<int> done{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        {
          std::lock_guard lock(serial);
          (*j)->append(1, std::to_string(t) + ":" + std::to_string(i));
        }
        std::mutex m;
        std::condition_variable cv;
        bool ran = false;
        (*j)->runWhenDurable(Journal::takeThreadLsn(), {[&] {
          std::lock_guard lock(m);
          ran = true;
          cv.notify_one();
        }});
        std::unique_lock lock(m);
        ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(30), [&] { return ran; }));
        done++;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(done.load(), 400);
  j->reset();
  Journal::Loaded again;
  auto k = Journal::open(dir.path(), {}, again);
  ASSERT_TRUE(k) << k.error();
  EXPECT_EQ(decode(joined(again)).size(), 400u);
}

}  // namespace
}  // namespace ipcfs::durable
