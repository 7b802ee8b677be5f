// UTF-8 validation and cutting (see utf8.hpp), after the Unicode standard's table 3-7 of
// well-formed byte sequences.
#include "agentcron/utf8.hpp"

namespace agentcron {
namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD
constexpr std::string_view kEllipsis = "\xE2\x80\xA6";     // U+2026

bool continuation(unsigned char c) { return (c & 0xC0) == 0x80; }

// The length of the well-formed sequence at the start of `s`, or 0 when it is not one.
std::size_t sequence_length(std::string_view s) {
  auto b = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
  unsigned char c = b(0);
  if (c < 0x80) return 1;
  std::size_t n;
  unsigned char lo = 0x80, hi = 0xBF;  // the allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) n = 2;
  else if (c == 0xE0) n = 3, lo = 0xA0;              // no overlong forms
  else if (c == 0xED) n = 3, hi = 0x9F;              // no surrogates
  else if (c >= 0xE1 && c <= 0xEF) n = 3;
  else if (c == 0xF0) n = 4, lo = 0x90;              // no overlong forms
  else if (c == 0xF4) n = 4, hi = 0x8F;              // nothing above U+10FFFF
  else if (c >= 0xF1 && c <= 0xF3) n = 4;
  else return 0;                                     // 0x80–0xC1, 0xF5–0xFF
  if (s.size() < n || b(1) < lo || b(1) > hi) return 0;
  for (std::size_t i = 2; i < n; ++i)
    if (!continuation(b(i))) return 0;
  return n;
}

}  // namespace

std::string valid_utf8(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  std::size_t i = 0;
  while (i < in.size()) {
    std::size_t n = sequence_length(in.substr(i));
    if (n == 0) {
      out += kReplacement;
      // One replacement for a maximal invalid prefix: skip the lead byte and the continuation
      // bytes that follow it.
      ++i;
      while (i < in.size() && continuation(static_cast<unsigned char>(in[i])) &&
             sequence_length(in.substr(i)) == 0)
        ++i;
      continue;
    }
    if (in[i] != '\0') out.append(in.data() + i, n);
    i += n;
  }
  return out;
}

std::string_view utf8_prefix(std::string_view s, std::size_t max_bytes) {
  if (s.size() <= max_bytes) return s;
  std::size_t end = max_bytes;
  while (end > 0 && continuation(static_cast<unsigned char>(s[end]))) --end;
  return s.substr(0, end);
}

std::string_view utf8_suffix(std::string_view s, std::size_t max_bytes) {
  if (s.size() <= max_bytes) return s;
  std::size_t start = s.size() - max_bytes;
  while (start < s.size() && continuation(static_cast<unsigned char>(s[start]))) ++start;
  return s.substr(start);
}

std::string bounded_utf8(std::string_view in, std::size_t max_bytes) {
  std::string v = valid_utf8(in);
  if (v.size() <= max_bytes) return v;
  if (max_bytes < kEllipsis.size()) return std::string(utf8_prefix(v, max_bytes));
  std::string out(utf8_prefix(v, max_bytes - kEllipsis.size()));
  out += kEllipsis;
  return out;
}

namespace {
// The code point of the C1 control (U+0080–U+009F, "\xc2\x80"–"\xc2\x9f") whose bytes start at
// s[i], or 0 when there is none there. Some terminals read U+009B as CSI.
unsigned char c1_control_at(std::string_view s, std::size_t i) {
  if (i + 1 >= s.size() || static_cast<unsigned char>(s[i]) != 0xc2) return 0;
  unsigned char next = static_cast<unsigned char>(s[i + 1]);
  return next >= 0x80 && next <= 0x9f ? next : 0;
}

// Appends `prefix` and the two hex digits of `v` ("\x1b", "\u009b").
void append_hex(std::string& out, const char* prefix, unsigned char v) {
  static const char* hex = "0123456789abcdef";
  out += prefix;
  out += hex[v >> 4];
  out += hex[v & 15];
}
}  // namespace

std::string one_line_text(std::string_view in) {
  std::string valid = valid_utf8(in);
  std::string out;
  out.reserve(valid.size());
  for (std::size_t i = 0; i < valid.size(); ++i) {
    char c = valid[i];
    unsigned char u = static_cast<unsigned char>(c);
    if (unsigned char c1 = c1_control_at(valid, i)) {
      append_hex(out, "\\u00", c1);
      ++i;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (u < 0x20 || u == 0x7f) {
      append_hex(out, "\\x", u);
    } else {
      out += c;
    }
  }
  return out;
}

std::string terminal_json(std::string_view json) {
  std::string out;
  out.reserve(json.size());
  for (std::size_t i = 0; i < json.size(); ++i) {
    if (unsigned char c1 = c1_control_at(json, i)) {
      append_hex(out, "\\u00", c1);
      ++i;
    } else if (static_cast<unsigned char>(json[i]) == 0x7f) {
      append_hex(out, "\\u00", 0x7f);
    } else {
      out += json[i];
    }
  }
  return out;
}

}  // namespace agentcron
