// valid_utf8, utf8_prefix/suffix and bounded_utf8: what reaches SQL is always valid UTF-8, cut on
// character boundaries.
#include "agentcron/utf8.hpp"

#include <gtest/gtest.h>

#include <random>

namespace agentcron {
namespace {

const std::string kFffd = "\xEF\xBF\xBD";

// Whether `s` is well-formed UTF-8 with no NUL: asked of the output by decoding it independently.
bool well_formed(const std::string& s) {
  std::size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c == 0) return false;
    std::size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    std::uint32_t cp = n == 1 ? c : c & (0xFF >> (n + 1));
    for (std::size_t k = 1; k < n; ++k) {
      auto d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3F);
    }
    static const std::uint32_t min_for[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_for[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n;
  }
  return true;
}

TEST(Utf8Test, KeepsValidTextByteForByte) {
  std::string s = "plain ascii, ünïcödé, 日本語のテキスト, emoji \xF0\x9F\x98\x80, U+10FFFF \xF4\x8F\xBF\xBF";
  EXPECT_EQ(valid_utf8(s), s);
}

TEST(Utf8Test, ReplacesEachInvalidSequenceWithOneReplacementCharacter) {
  EXPECT_EQ(valid_utf8("\xFF\xFE bad"), kFffd + kFffd + " bad");
  EXPECT_EQ(valid_utf8("a\x80\x80\x80z"), "a" + kFffd + "z");          // stray continuation bytes
  EXPECT_EQ(valid_utf8("\xE6\x97"), kFffd);                             // a sequence cut short
  EXPECT_EQ(valid_utf8("\xC0\xAF"), kFffd);                             // overlong '/'
  EXPECT_EQ(valid_utf8("\xED\xA0\x80"), kFffd);                         // a surrogate
  EXPECT_EQ(valid_utf8("\xF4\x90\x80\x80"), kFffd);                     // above U+10FFFF
  EXPECT_EQ(valid_utf8("\xE6\x97" "A"), kFffd + "A");                   // the next character survives
}

TEST(Utf8Test, DropsNulBytes) { EXPECT_EQ(valid_utf8(std::string("a\0b", 3)), "ab"); }

TEST(Utf8Test, CutsOnCharacterBoundariesOnly) {
  std::string s = "ab\xE6\x97\xA5\xE6\x9C\xAC";  // "ab日本": 2 + 3 + 3 bytes
  EXPECT_EQ(utf8_prefix(s, 4), "ab");
  EXPECT_EQ(utf8_prefix(s, 5), "ab\xE6\x97\xA5");
  EXPECT_EQ(utf8_suffix(s, 4), "\xE6\x9C\xAC");
  EXPECT_EQ(utf8_suffix(s, 100), s);
  EXPECT_EQ(utf8_prefix(s, 0), "");
}

TEST(Utf8Test, BoundedTextEndsWithAnEllipsisWithinTheLimit) {
  std::string jp;
  for (int i = 0; i < 3000; ++i) jp += "\xE6\x97\xA5";  // 9000 bytes of 3-byte characters
  for (std::size_t limit : {4096u, 8192u, 4097u, 4098u}) {
    std::string b = bounded_utf8(jp, limit);
    EXPECT_LE(b.size(), limit);
    EXPECT_GE(b.size(), limit - 5);
    EXPECT_TRUE(well_formed(b)) << limit;
    EXPECT_EQ(b.substr(b.size() - 3), "\xE2\x80\xA6");
  }
  EXPECT_EQ(bounded_utf8("short", 8192), "short");
}

TEST(Utf8Test, AnyBytesComeOutWellFormed) {
  std::mt19937 rng(7);
  for (int round = 0; round < 2000; ++round) {
    std::string s(rng() % 64, '\0');
    for (auto& c : s) c = static_cast<char>(rng() % 256);
    std::string v = valid_utf8(s);
    ASSERT_TRUE(well_formed(v)) << round;
    ASSERT_TRUE(well_formed(bounded_utf8(s, rng() % 40)));
    ASSERT_TRUE(well_formed(std::string(utf8_suffix(v, rng() % 40))));
  }
}

}  // namespace
}  // namespace agentcron

namespace agentcron {
namespace {

TEST(Utf8, OneLineTextWritesOutC0AndC1ControlsForTerminals) {
  EXPECT_EQ(one_line_text("a\x1b[2Jb\x07\tc\n\xc2\x9b" "31m \xc2\xa0\xc3\xa9"), "a\\x1b[2Jb\\x07\\tc\\n\\u009b31m \xc2\xa0\xc3\xa9");
}

TEST(Utf8, TerminalJsonEscapesDelAndC1ControlsAndKeepsTheRest) {
  // PostgreSQL's JSON escapes C0 itself; DEL, U+009B (CSI) and U+0085 pass through it.
  EXPECT_EQ(terminal_json("{\"a\": \"x\x7f\xc2\x9b" "31m\xc2\x85 \xc2\xa0\xc3\xa9\\u001b\"}"),
            "{\"a\": \"x\\u007f\\u009b31m\\u0085 \xc2\xa0\xc3\xa9\\u001b\"}");
  EXPECT_EQ(terminal_json("\xc2"), "\xc2");  // a lone lead byte at the end is left alone
}

}  // namespace
}  // namespace agentcron
