// Durations as users write them ("250ms", "15s", "5m", "1h", "7d", "1h30m"), parsed and printed.
#pragma once
#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace agentcron {

using Millis = std::chrono::milliseconds;

// Parses a duration string; nullopt (with `why` filled) when it is not one.
// Accepts a sequence of <integer><unit> with units ms, s, m, h, d; "0" alone is zero.
std::optional<Millis> parse_duration(std::string_view text, std::string* why = nullptr);

// The shortest exact spelling of `d` in the same units ("1500ms", "15s", "1h30m").
std::string format_duration(Millis d);

}  // namespace agentcron
