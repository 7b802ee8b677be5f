// Parsing and printing of the duration strings used in configuration and on the command line.
#include "agentcron/duration.hpp"

#include <cctype>
#include <cstdint>
#include <limits>

namespace agentcron {

std::optional<Millis> parse_duration(std::string_view text, std::string* why) {
  auto fail = [&](std::string msg) -> std::optional<Millis> {
    if (why) *why = std::move(msg);
    return std::nullopt;
  };
  if (text.empty()) return fail("empty duration");
  if (text == "0") return Millis{0};
  std::int64_t total = 0;
  std::size_t i = 0;
  while (i < text.size()) {
    if (!std::isdigit(static_cast<unsigned char>(text[i])))
      return fail("expected a number at \"" + std::string(text.substr(i)) + "\"");
    std::int64_t n = 0;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
      if (n > std::numeric_limits<std::int64_t>::max() / 10 / 1000) return fail("too large");
      n = n * 10 + (text[i++] - '0');
    }
    std::size_t u = i;
    while (i < text.size() && std::isalpha(static_cast<unsigned char>(text[i]))) ++i;
    std::string_view unit = text.substr(u, i - u);
    std::int64_t scale;
    if (unit == "ms") scale = 1;
    else if (unit == "s") scale = 1000;
    else if (unit == "m") scale = 60'000;
    else if (unit == "h") scale = 3'600'000;
    else if (unit == "d") scale = 86'400'000;
    else if (unit.empty()) return fail("missing unit after " + std::to_string(n) + " (use ms, s, m, h or d)");
    else return fail("unknown unit \"" + std::string(unit) + "\" (use ms, s, m, h or d)");
    if (n > (std::numeric_limits<std::int64_t>::max() - total) / scale) return fail("too large");
    total += n * scale;
  }
  return Millis{total};
}

std::string format_duration(Millis d) {
  std::int64_t ms = d.count();
  if (ms == 0) return "0s";
  std::string out;
  if (ms < 0) { out = "-"; ms = -ms; }
  if (ms % 1000 != 0) return out + std::to_string(ms) + "ms";
  std::int64_t s = ms / 1000;
  const std::pair<std::int64_t, const char*> units[] = {{86400, "d"}, {3600, "h"}, {60, "m"}, {1, "s"}};
  for (auto [size, name] : units) {
    if (s >= size) {
      out += std::to_string(s / size) + name;
      s %= size;
    }
  }
  return out;
}

}  // namespace agentcron
