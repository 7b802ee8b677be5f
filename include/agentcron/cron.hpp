// CronSchedule: parses cron expressions (5 or 6 fields, names, macros, @every) and computes the
// next fire time in any IANA time zone, with ISC cron's rules for DST gaps and overlaps.
#pragma once
#include <array>
#include <chrono>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace agentcron {

// An invalid expression: what() names the field, the offending text and why, e.g.
// `cron: field 2 (hour): 24 is out of range 0-23 in "0 24 * * *"`.
class CronError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// An IANA time zone from the system's tzdata. Cheap to copy; keeps <date/tz.h> out of headers.
class TimeZone {
 public:
  static TimeZone utc();
  static std::optional<TimeZone> find(std::string_view name);
  // find() or throw CronError("unknown time zone …").
  static TimeZone locate(std::string_view name);
  std::string_view name() const;
  const void* impl() const { return zone_; }

 private:
  explicit TimeZone(const void* z) : zone_(z) {}
  const void* zone_;
};

class CronSchedule {
 public:
  using Time = std::chrono::system_clock::time_point;

  // Throws CronError. Never accepts a schedule that can never fire.
  static CronSchedule parse(std::string_view text);

  // The first fire time strictly after `after`, in `zone`. For @every, after + the interval.
  Time next(Time after, const TimeZone& zone) const;

  // Whether the local wall-clock time (seconds since 1970 as if the zone were UTC) matches.
  bool matches_local(std::chrono::sys_seconds local) const;

  const std::string& text() const { return text_; }
  bool is_every() const { return every_.count() > 0; }
  std::chrono::milliseconds every() const { return every_; }
  bool has_seconds() const { return has_seconds_; }

 private:
  CronSchedule() = default;
  std::optional<std::chrono::sys_seconds> next_local_match(std::chrono::sys_seconds from) const;
  bool day_matches(int year, unsigned month, unsigned day) const;

  std::string text_;
  std::chrono::milliseconds every_{0};
  bool has_seconds_ = false;
  std::uint64_t seconds_ = 0;   // bit n: second n
  std::uint64_t minutes_ = 0;   // bit n: minute n
  std::uint32_t hours_ = 0;     // bit n: hour n
  std::uint32_t days_ = 0;      // bit n: day of month n (1-31)
  std::uint16_t months_ = 0;    // bit n: month n (1-12)
  std::uint8_t weekdays_ = 0;   // bit n: weekday n (0 = Sunday)
  bool dom_star_ = false;       // day-of-month field starts with '*'
  bool dow_star_ = false;       // day-of-week field starts with '*'
  bool hour_star_ = false;      // hour field starts with '*': every real hour fires at fall-back
};

// A recurring task's next fire time strictly after `after`, or, when its schedule or time zone
// does not parse, why not (the CronError's text) and no time.
struct NextFire {
  std::optional<CronSchedule::Time> at;
  std::string error;
};
NextFire next_fire(std::string_view cron, std::string_view timezone, CronSchedule::Time after);

// Formats a time as UTC ISO-8601 with a Z, to the second: 2026-03-08T07:00:00Z.
std::string format_utc(std::chrono::sys_seconds t);
// Parses ISO-8601: 2026-03-07T12:00:00Z, with an optional fraction and a Z or ±hh:mm offset;
// a date alone is midnight UTC. nullopt when it is not one.
std::optional<std::chrono::system_clock::time_point> parse_iso8601(std::string_view text);

}  // namespace agentcron
