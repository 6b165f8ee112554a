// A writer killed mid-message: the close its exit causes (flush with closerKilled) sends
// nothing, gives back what the draft held, and frees a drop-in's name.
#include <gtest/gtest.h>

#include <fcntl.h>

#include <string>
#include <vector>

#include "engine_fixture.hpp"
#include "ipcfs/engine.hpp"

namespace ipcfs::test {
namespace {

using FaultsTest = EngineTest;

TEST_F(FaultsTest, ASenderKilledMidMessageSendsNothing) {
  const uint64_t box = client_.mkdir("a");
  const uint64_t fh = client_.openSend(box);
  ASSERT_EQ(errnoOf(client_.write(fh, "half a mess")), 0);
  std::optional<Status> closed;
  EXPECT_FALSE(engine_.flush(fh, [&](Status s) { closed = s; }, /*closerKilled=*/true));
  ASSERT_TRUE(closed);
  EXPECT_EQ(errnoOf(*closed), 0);
  engine_.release(fh);
  EXPECT_EQ(client_.list(box), std::vector<std::string>{});
  EXPECT_EQ(client_.rootStatusValue("bytes_held"), "0");
  EXPECT_EQ(errnoOf(client_.send(box, "whole")), 0) << "the next sender is unaffected";
  EXPECT_EQ(textOf(client_.receive(box)), "whole");
}

TEST_F(FaultsTest, ADropInWriterKilledMidFileFreesTheName) {
  const uint64_t box = client_.mkdir("a");
  auto created = client_.create(box, "report.txt", O_WRONLY | O_CREAT | O_EXCL);
  ASSERT_TRUE(created);
  const uint64_t fh = created->second.fh;
  ASSERT_EQ(errnoOf(client_.write(fh, "half")), 0);
  EXPECT_FALSE(engine_.flush(fh, [](Status) {}, /*closerKilled=*/true));
  engine_.release(fh);
  EXPECT_EQ(client_.list(box), std::vector<std::string>{});
  EXPECT_EQ(client_.inoOf(box, "report.txt"), 0u) << "the name is free again";
  EXPECT_EQ(client_.rootStatusValue("bytes_held"), "0");
}

}  // namespace
}  // namespace ipcfs::test
