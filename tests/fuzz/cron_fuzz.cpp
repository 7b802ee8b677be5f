// libFuzzer target for the cron parser and fire-time search: any input either parses or throws
// CronError, and a parsed schedule's next() is strictly later, matches, and never hangs.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "agentcron/cron.hpp"
#include "agentcron/duration.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  agentcron::parse_duration(text);
  agentcron::parse_iso8601(text);
  try {
    auto s = agentcron::CronSchedule::parse(text);
    static const auto utc = agentcron::TimeZone::utc();
    static const auto ny = agentcron::TimeZone::locate("America/New_York");
    auto t = std::chrono::system_clock::time_point(std::chrono::seconds(1700000000 + (size * 7919) % 400000000));
    for (int i = 0; i < 3; ++i) {
      auto n = s.next(t, utc);
      if (n <= t) std::abort();
      if (!s.is_every() && !s.matches_local(std::chrono::floor<std::chrono::seconds>(n))) std::abort();
      t = n;
    }
    s.next(t, ny);
  } catch (const agentcron::CronError&) {
  }
  return 0;
}
