// user.ipc.* extended attributes: what mailboxes and messages report, which can be set,
// how values are parsed, and the errors for unknown, read-only and malformed ones.
#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <string>
#include <vector>

#include "engine_fixture.hpp"
#include "ipcfs/engine.hpp"
#include "ipcfs/inode.hpp"

namespace ipcfs::test {
namespace {

// Splits a listxattr answer (NUL-separated names) into names.
std::vector<std::string> splitNames(const std::string& list) {
  std::vector<std::string> names;
  size_t start = 0;
  while (start < list.size()) {
    size_t end = list.find('\0', start);
    if (end == std::string::npos) end = list.size();
    names.push_back(list.substr(start, end - start));
    start = end + 1;
  }
  return names;
}

class XattrTest : public EngineTest {
 protected:
  void SetUp() override {
    box_ = client_.mkdir("a");
    ASSERT_EQ(errnoOf(client_.send(box_, "payload", Caller{.pid = 321, .uid = 1000, .gid = 1000})), 0);
    message_ = client_.inoOf(box_, "0000000001");
    ASSERT_NE(message_, 0u);
  }

  uint64_t box_ = 0;
  uint64_t message_ = 0;
};

TEST_F(XattrTest, MailboxReportsItsIdAndDefaultMaxMsgSize) {
  EXPECT_EQ(client_.xattr(box_, "user.ipc.id"), std::to_string(ino::idOf(box_)));
  EXPECT_EQ(client_.xattr(box_, "user.ipc.max_msg_size"), std::to_string(kDefaultMaxMsgSize));
  EXPECT_GE(kDefaultMaxMsgSize, uint64_t{1} << 20);
}

TEST_F(XattrTest, MessageReportsSeqSenderAndRedeliveries) {
  EXPECT_EQ(client_.xattr(message_, "user.ipc.seq"), "1");
  EXPECT_EQ(client_.xattr(message_, "user.ipc.sender_pid"), "321");
  EXPECT_EQ(client_.xattr(message_, "user.ipc.redeliveries"), "0");
}

TEST_F(XattrTest, ListxattrNamesEveryApplicableAttributeAndEachIsReadable) {
  struct Case {
    uint64_t ino;
    std::vector<std::string> required;
  };
  for (const Case& c : {Case{box_, {"user.ipc.id", "user.ipc.max_msg_size"}},
                        Case{message_, {"user.ipc.seq", "user.ipc.sender_pid", "user.ipc.redeliveries"}}}) {
    auto list = engine_.listxattr(c.ino);
    ASSERT_TRUE(list);
    const auto names = splitNames(*list);
    for (const auto& want : c.required)
      EXPECT_NE(std::find(names.begin(), names.end(), want), names.end()) << want << " is not listed";
    for (const auto& name : names) {
      EXPECT_TRUE(name.starts_with("user.ipc.")) << name;
      EXPECT_EQ(errnoOf(engine_.getxattr(c.ino, name)), 0) << name << " is listed but cannot be read";
    }
  }
}

TEST_F(XattrTest, GettingAnUnknownNameIsENODATA) {
  EXPECT_EQ(errnoOf(engine_.getxattr(box_, "user.ipc.nonsense")), ENODATA);
  EXPECT_EQ(errnoOf(engine_.getxattr(box_, "user.comment")), ENODATA);
  EXPECT_EQ(errnoOf(engine_.getxattr(box_, "user.ipc.seq")), ENODATA) << "a message attribute on a mailbox";
  EXPECT_EQ(errnoOf(engine_.getxattr(message_, "user.ipc.id")), ENODATA) << "a mailbox attribute on a message";
  EXPECT_EQ(errnoOf(engine_.getxattr(message_, "security.selinux")), ENODATA);
}

TEST_F(XattrTest, ControlNodesAnswerGetxattrWithoutFailing) {
  // "open, stat and getxattr on them work": an absent attribute, not a missing node.
  EXPECT_EQ(errnoOf(engine_.getxattr(sendIno(box_), "user.ipc.id")), ENODATA);
  EXPECT_EQ(errnoOf(engine_.getxattr(receiveIno(box_), "user.ipc.id")), ENODATA);
  EXPECT_EQ(errnoOf(engine_.listxattr(receiveIno(box_))), 0);
}

TEST_F(XattrTest, MissingNodesAreENOENT) {
  const uint64_t gone = ino::make(ino::Kind::Message, 999'999);
  EXPECT_EQ(errnoOf(engine_.getxattr(gone, "user.ipc.seq")), ENOENT);
  EXPECT_EQ(errnoOf(engine_.listxattr(gone)), ENOENT);
  EXPECT_EQ(errnoOf(engine_.setxattr(gone, "user.ipc.seq", "1")), ENOENT);
}

TEST_F(XattrTest, SettingAnUnknownNameIsENOTSUP) {
  EXPECT_EQ(errnoOf(engine_.setxattr(box_, "user.ipc.nonsense", "1")), ENOTSUP);
  EXPECT_EQ(errnoOf(engine_.setxattr(box_, "user.comment", "hello")), ENOTSUP);
  EXPECT_EQ(errnoOf(engine_.setxattr(message_, "user.ipc.nonsense", "1")), ENOTSUP);
  EXPECT_EQ(errnoOf(engine_.setxattr(message_, "user.ipc.max_msg_size", "1")), ENOTSUP);
  EXPECT_EQ(errnoOf(engine_.getxattr(box_, "user.ipc.nonsense")), ENODATA) << "nothing was stored";
}

TEST_F(XattrTest, SettingAReadOnlyNameIsEPERMAndChangesNothing) {
  const std::string id = client_.xattr(box_, "user.ipc.id");
  EXPECT_EQ(errnoOf(engine_.setxattr(box_, "user.ipc.id", "77")), EPERM);
  EXPECT_EQ(client_.xattr(box_, "user.ipc.id"), id);
  for (const char* name : {"user.ipc.seq", "user.ipc.sender_pid", "user.ipc.redeliveries"}) {
    const std::string before = client_.xattr(message_, name);
    EXPECT_EQ(errnoOf(engine_.setxattr(message_, name, "77")), EPERM) << name;
    EXPECT_EQ(client_.xattr(message_, name), before) << name;
  }
}

TEST_F(XattrTest, MaxMsgSizeCanBeSetWithOrWithoutATrailingNewline) {
  ASSERT_EQ(errnoOf(engine_.setxattr(box_, "user.ipc.max_msg_size", "2048")), 0);
  EXPECT_EQ(client_.xattr(box_, "user.ipc.max_msg_size"), "2048");
  ASSERT_EQ(errnoOf(engine_.setxattr(box_, "user.ipc.max_msg_size", "4096\n")), 0);
  EXPECT_EQ(client_.xattr(box_, "user.ipc.max_msg_size"), "4096");
}

TEST_F(XattrTest, MalformedMaxMsgSizeIsEINVALAndLeavesTheValueUnchanged) {
  ASSERT_EQ(errnoOf(engine_.setxattr(box_, "user.ipc.max_msg_size", "2048")), 0);
  const std::string huge = std::to_string(kMaxMaxMsgSize + 1);
  for (const std::string& bad : std::vector<std::string>{"", "\n", "abc", "-1", "+5", "12abc", " 12", "12 ",
                                                         "12\n\n", "\n12", "0x10", "1e3", "1.5",
                                                         "99999999999999999999999", huge}) {
    EXPECT_EQ(errnoOf(engine_.setxattr(box_, "user.ipc.max_msg_size", bad)), EINVAL) << "value '" << bad << "'";
    EXPECT_EQ(client_.xattr(box_, "user.ipc.max_msg_size"), "2048") << "after value '" << bad << "'";
  }
}

TEST_F(XattrTest, MaxMsgSizeIsPerMailbox) {
  const uint64_t other = client_.mkdir("b");
  ASSERT_EQ(errnoOf(engine_.setxattr(box_, "user.ipc.max_msg_size", "3")), 0);
  EXPECT_EQ(errnoOf(client_.send(box_, "four")), EFBIG);
  EXPECT_EQ(errnoOf(client_.send(other, "four")), 0);
  EXPECT_EQ(client_.xattr(other, "user.ipc.max_msg_size"), std::to_string(kDefaultMaxMsgSize));
}

TEST_F(XattrTest, RemovingAnAttributeChangesNothing) {
  EXPECT_NE(errnoOf(engine_.removexattr(box_, "user.ipc.max_msg_size")), 0);
  EXPECT_EQ(client_.xattr(box_, "user.ipc.max_msg_size"), std::to_string(kDefaultMaxMsgSize));
  EXPECT_NE(errnoOf(engine_.removexattr(message_, "user.ipc.seq")), 0);
  EXPECT_EQ(client_.xattr(message_, "user.ipc.seq"), "1");
  EXPECT_EQ(errnoOf(engine_.removexattr(box_, "user.comment")), ENODATA);
}

TEST_F(XattrTest, RedeliveriesCountsEachEarlyClose) {
  const uint64_t rx = client_.openReceive(box_);
  ASSERT_EQ(textOf(client_.readNow(rx, 3)), "pay");
  engine_.release(rx);
  EXPECT_EQ(client_.xattr(message_, "user.ipc.redeliveries"), "1");
  EXPECT_EQ(client_.xattr(message_, "user.ipc.seq"), "1") << "a redelivered message keeps its seq";
}

}  // namespace
}  // namespace ipcfs::test
