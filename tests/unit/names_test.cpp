// Name rules: lengths, reserved leading dot, forbidden bytes.
#include <gtest/gtest.h>

#include <cerrno>
#include <string>

#include "names.hpp"

namespace ipcfs {
namespace {

TEST(Names, AcceptsOrdinaryNames) {
  EXPECT_TRUE(validateName("orders"));
  EXPECT_TRUE(validateName("report.pdf"));
  EXPECT_TRUE(validateName(std::string(255, 'x')));
}

TEST(Names, RejectsReservedAndMalformed) {
  EXPECT_EQ(validateName(".send").error(), std::errc::invalid_argument);
  EXPECT_EQ(validateName("").error(), std::errc::invalid_argument);
  EXPECT_EQ(validateName("a/b").error(), std::errc::invalid_argument);
  EXPECT_EQ(validateName(std::string("a\0b", 3)).error(), std::errc::invalid_argument);
  EXPECT_EQ(validateName(std::string(256, 'x')).error(), std::errc::filename_too_long);
}

}  // namespace
}  // namespace ipcfs
