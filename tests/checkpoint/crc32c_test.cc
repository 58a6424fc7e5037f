// CRC-32C against the standard check value (RFC 3720 Appendix B.4; the "check" of the
// CRC-32/ISCSI entry in Greg Cook's CRC catalogue) and the streaming property the checkpoint
// writer relies on (update over chunks == one pass).
#include "checkpoint/crc32c.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace loom::ckpt {
namespace {

TEST(Crc32c, CheckValueOf123456789IsE3069283) {
  EXPECT_EQ(crc32c("123456789"), 0xE3069283u);
}

TEST(Crc32c, EmptyInputIsZero) { EXPECT_EQ(crc32c(""), 0u); }

// RFC 3720 B.4: 32 bytes of zeros -> 0x8A9136AA, 32 bytes of 0xFF -> 0x62A8AB43.
TEST(Crc32c, Rfc3720ZerosAndOnes) {
  const std::vector<uint8_t> zeros(32, 0x00), ones(32, 0xFF);
  EXPECT_EQ(crc32c(zeros.data(), zeros.size()), 0x8A9136AAu);
  EXPECT_EQ(crc32c(ones.data(), ones.size()), 0x62A8AB43u);
}

TEST(Crc32c, UpdateOverChunksEqualsOnePass) {
  std::string s;
  for (int i = 0; i < 1000; ++i) s += static_cast<char>(i * 37 + 11);
  uint32_t crc = 0;
  for (size_t pos = 0; pos < s.size(); pos += 77) {
    crc = crc32c_update(crc, s.data() + pos, std::min<size_t>(77, s.size() - pos));
  }
  EXPECT_EQ(crc, crc32c(s));
}

}  // namespace
}  // namespace loom::ckpt
