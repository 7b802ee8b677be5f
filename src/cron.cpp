// Cron parsing and fire-time computation (see cron.hpp).
//
// next() walks the zone's UTC-offset periods: inside one period local time and UTC differ by a
// constant, so the first matching local time maps to exactly one instant. At a period's edge the
// ISC cron rules apply: a local time inside a spring-forward gap fires at the first instant after
// the gap, and a local time repeated at fall-back fires only at its first occurrence unless the
// hour field is '*'.
#include "agentcron/cron.hpp"

#include <date/tz.h>

#include <bit>
#include <cctype>
#include <cstdio>
#include <vector>

#include "agentcron/duration.hpp"

namespace agentcron {
namespace {

using std::chrono::days;
using std::chrono::seconds;
using std::chrono::sys_days;
using std::chrono::sys_seconds;

struct FieldDef {
  const char* name;
  int lo, hi;
  const char* const* names;  // names for lo.., or nullptr
};

const char* const kMonthNames[] = {"JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC", nullptr};
const char* const kDayNames[] = {"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT", nullptr};

const FieldDef kSecond{"second", 0, 59, nullptr};
const FieldDef kMinute{"minute", 0, 59, nullptr};
const FieldDef kHour{"hour", 0, 23, nullptr};
const FieldDef kDom{"day-of-month", 1, 31, nullptr};
const FieldDef kMonth{"month", 1, 12, kMonthNames};
const FieldDef kDow{"day-of-week", 0, 7, kDayNames};

struct FieldError {
  std::string why;
};

int parse_value(const FieldDef& f, std::string_view s) {
  if (s.empty()) throw FieldError{"missing value"};
  bool digits = true;
  for (char c : s) digits = digits && std::isdigit(static_cast<unsigned char>(c));
  if (digits) {
    if (s.size() > 4) throw FieldError{std::string(s) + " is out of range " + std::to_string(f.lo) + "-" + std::to_string(f.hi)};
    int v = std::stoi(std::string(s));
    if (v < f.lo || v > f.hi)
      throw FieldError{std::string(s) + " is out of range " + std::to_string(f.lo) + "-" + std::to_string(f.hi)};
    return v;
  }
  if (f.names) {
    std::string up(s);
    for (auto& c : up) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    for (int i = 0; f.names[i]; ++i)
      if (up == f.names[i]) return f.lo == 0 ? i : i + 1;
    throw FieldError{"unknown name \"" + std::string(s) + "\""};
  }
  throw FieldError{"\"" + std::string(s) + "\" is not a number"};
}

// Parses one field into a bit mask over [lo, hi]; sets `star` when the field starts with '*'.
std::uint64_t parse_field(const FieldDef& f, std::string_view text, bool& star) {
  star = !text.empty() && text.front() == '*';
  std::uint64_t mask = 0;
  std::size_t start = 0;
  while (true) {
    std::size_t comma = text.find(',', start);
    std::string_view item = text.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
    if (item.empty()) throw FieldError{"empty list item"};
    std::size_t slash = item.find('/');
    std::string_view base = item.substr(0, slash);
    int lo, hi, step = 1;
    bool ranged = false;
    if (base == "*") {
      lo = f.lo;
      hi = f.hi == 7 ? 6 : f.hi;  // '*' in day-of-week is 0-6
      ranged = true;
    } else {
      std::size_t dash = base.find('-');
      lo = parse_value(f, base.substr(0, dash));
      hi = lo;
      if (dash != std::string_view::npos) {
        hi = parse_value(f, base.substr(dash + 1));
        ranged = true;
        if (hi < lo) throw FieldError{"range " + std::string(base) + " is reversed"};
      }
    }
    if (slash != std::string_view::npos) {
      std::string_view st = item.substr(slash + 1);
      bool digits = !st.empty() && st.size() <= 4;
      for (char c : st) digits = digits && std::isdigit(static_cast<unsigned char>(c));
      if (!digits) throw FieldError{"step \"" + std::string(st) + "\" is not a number"};
      step = std::stoi(std::string(st));
      if (step == 0) throw FieldError{"step 0 is not allowed"};
      int span = (f.hi == 7 ? 6 : f.hi) - f.lo + 1;
      if (step >= span)
        throw FieldError{"step " + std::to_string(step) + " is larger than the field's range " + std::to_string(f.lo) +
                         "-" + std::to_string(f.hi == 7 ? 6 : f.hi)};
      if (!ranged) hi = f.hi == 7 ? 6 : f.hi;  // "5/10" means 5-max/10
    }
    for (int v = lo; v <= hi; v += step) mask |= std::uint64_t{1} << v;
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  if (f.hi == 7 && (mask >> 7 & 1)) mask = (mask & ~(std::uint64_t{1} << 7)) | 1;  // 7 is Sunday
  return mask;
}

int days_in_month(int y, unsigned m) {
  static constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (m == 2) return std::chrono::year{y}.is_leap() ? 29 : 28;
  return kDays[m - 1];
}

const date::time_zone* tz(const TimeZone& z) { return static_cast<const date::time_zone*>(z.impl()); }

// Lowest set bit of `mask` at or above `from`, or -1.
int next_bit(std::uint64_t mask, int from) {
  if (from >= 64) return -1;
  std::uint64_t m = mask >> from;
  return m ? from + std::countr_zero(m) : -1;
}

}  // namespace

TimeZone TimeZone::utc() {
  static const date::time_zone* z = date::locate_zone("UTC");
  return TimeZone(z);
}

std::optional<TimeZone> TimeZone::find(std::string_view name) {
  if (name.empty()) return std::nullopt;
  try {
    return TimeZone(date::locate_zone(name));
  } catch (const std::runtime_error&) {
    return std::nullopt;
  }
}

TimeZone TimeZone::locate(std::string_view name) {
  if (auto z = find(name)) return *z;
  throw CronError("cron: unknown time zone \"" + std::string(name) + "\"");
}

std::string_view TimeZone::name() const { return tz(*this)->name(); }

namespace {

std::string_view trimmed(std::string_view t) {
  while (!t.empty() && std::isspace(static_cast<unsigned char>(t.front()))) t.remove_prefix(1);
  while (!t.empty() && std::isspace(static_cast<unsigned char>(t.back()))) t.remove_suffix(1);
  return t;
}

// "@every 30s": its interval; nullopt for anything else.
std::optional<Millis> every_interval(std::string_view t, const std::string& quoted) {
  if (t.substr(0, t.find_first_of(" \t")) != "@every") return std::nullopt;
  std::string_view arg = trimmed(t.substr(6));
  std::string why;
  auto d = parse_duration(arg, &why);
  if (!d) throw CronError("cron: @every needs a duration such as 30s or 5m (" + why + ") in " + quoted);
  if (d->count() <= 0) throw CronError("cron: @every needs a duration > 0 in " + quoted);
  if (*d > std::chrono::days(366)) throw CronError("cron: @every is at most 366d in " + quoted);
  return d;
}

// A macro (@daily, …) as its five fields; other text as it is.
std::string expand_macro(std::string_view t, const std::string& quoted) {
  if (t.empty() || t.front() != '@') return std::string(t);
  std::string_view macro = t.substr(0, t.find_first_of(" \t"));
  if (macro.size() != t.size()) throw CronError("cron: " + std::string(macro) + " takes no arguments in " + quoted);
  if (macro == "@yearly" || macro == "@annually") return "0 0 1 1 *";
  if (macro == "@monthly") return "0 0 1 * *";
  if (macro == "@weekly") return "0 0 * * 0";
  if (macro == "@daily" || macro == "@midnight") return "0 0 * * *";
  if (macro == "@hourly") return "0 * * * *";
  throw CronError("cron: unknown macro " + std::string(macro) + " in " + quoted);
}

std::vector<std::string_view> split_fields(std::string_view t) {
  std::vector<std::string_view> fields;
  std::size_t i = 0;
  while (i < t.size()) {
    while (i < t.size() && std::isspace(static_cast<unsigned char>(t[i]))) ++i;
    std::size_t start = i;
    while (i < t.size() && !std::isspace(static_cast<unsigned char>(t[i]))) ++i;
    if (i > start) fields.push_back(t.substr(start, i - start));
  }
  return fields;
}

// Whether some chosen month has one of the chosen days (30 February never comes).
bool some_month_has_a_day(std::uint16_t month_mask, std::uint32_t day_mask) {
  for (unsigned m = 1; m <= 12; ++m) {
    if (!(month_mask >> m & 1)) continue;
    int max_day = m == 2 ? 29 : days_in_month(2001, m);
    for (int d = 1; d <= max_day; ++d)
      if (day_mask >> d & 1) return true;
  }
  return false;
}

}  // namespace

CronSchedule CronSchedule::parse(std::string_view text) {
  CronSchedule s;
  s.text_ = std::string(text);
  const std::string quoted = "\"" + std::string(text) + "\"";
  std::string_view t = trimmed(text);
  if (auto every = every_interval(t, quoted)) {
    s.every_ = *every;
    return s;
  }
  const std::string expanded = expand_macro(t, quoted);
  std::vector<std::string_view> fields = split_fields(expanded);
  if (fields.size() != 5 && fields.size() != 6)
    throw CronError("cron: expected 5 or 6 fields, got " + std::to_string(fields.size()) + " in " + quoted);
  s.has_seconds_ = fields.size() == 6;
  const FieldDef* defs5[] = {&kMinute, &kHour, &kDom, &kMonth, &kDow};
  const FieldDef* defs6[] = {&kSecond, &kMinute, &kHour, &kDom, &kMonth, &kDow};
  const FieldDef* const* defs = s.has_seconds_ ? defs6 : defs5;
  std::uint64_t masks[6] = {};
  bool stars[6] = {};
  for (std::size_t n = 0; n < fields.size(); ++n) {
    try {
      masks[n] = parse_field(*defs[n], fields[n], stars[n]);
    } catch (const FieldError& e) {
      throw CronError("cron: field " + std::to_string(n + 1) + " (" + defs[n]->name + "): " + e.why + " in " + quoted);
    }
  }
  std::size_t o = s.has_seconds_ ? 1 : 0;
  s.seconds_ = s.has_seconds_ ? masks[0] : 1;
  s.minutes_ = masks[o];
  s.hours_ = static_cast<std::uint32_t>(masks[o + 1]);
  s.days_ = static_cast<std::uint32_t>(masks[o + 2]);
  s.months_ = static_cast<std::uint16_t>(masks[o + 3]);
  s.weekdays_ = static_cast<std::uint8_t>(masks[o + 4]);
  s.hour_star_ = stars[o + 1];
  s.dom_star_ = stars[o + 2];
  s.dow_star_ = stars[o + 4];
  // A schedule that can never fire: only day-of-month decides, and no chosen month has any of
  // the chosen days. Caught here so that next() never searches in vain.
  if ((s.dom_star_ || s.dow_star_) && !some_month_has_a_day(s.months_, s.days_))
    throw CronError("cron: field " + std::to_string(o + 3) + " (day-of-month): no chosen month has day " +
                    std::string(fields[o + 2]) + ", so the schedule never fires, in " + quoted);
  return s;
}

bool CronSchedule::day_matches(int year, unsigned month, unsigned day) const {
  bool dom = days_ >> day & 1;
  unsigned wd = std::chrono::weekday(sys_days(std::chrono::year{year} / month / day)).c_encoding();
  bool dow = weekdays_ >> wd & 1;
  // Vixie/ISC: when either field starts with '*', both must match; else either may.
  if (dom_star_ || dow_star_) return dom && dow;
  return dom || dow;
}

bool CronSchedule::matches_local(sys_seconds local) const {
  auto d = std::chrono::floor<days>(local);
  std::chrono::year_month_day ymd(d);
  std::chrono::hh_mm_ss hms(local - d);
  return (months_ >> unsigned(ymd.month()) & 1) &&
         day_matches(int(ymd.year()), unsigned(ymd.month()), unsigned(ymd.day())) &&
         (hours_ >> hms.hours().count() & 1) && (minutes_ >> hms.minutes().count() & 1) &&
         (seconds_ >> hms.seconds().count() & 1);
}

std::optional<sys_seconds> CronSchedule::next_local_match(sys_seconds from) const {
  auto dp = std::chrono::floor<days>(from);
  std::chrono::year_month_day ymd(dp);
  std::chrono::hh_mm_ss hms(from - dp);
  int y = int(ymd.year());
  unsigned m = unsigned(ymd.month()), d = unsigned(ymd.day());
  int h = int(hms.hours().count()), mi = int(hms.minutes().count()), s = int(hms.seconds().count());
  const int last_year = y + 30;  // parse() rejected never-firing schedules; 29 Feb + weekday < 30 y
  while (true) {
    if (s > 59) { s = 0; ++mi; }
    if (mi > 59) { mi = 0; ++h; }
    if (h > 23) { h = 0; ++d; }
    if (int(d) > days_in_month(y, m)) { d = 1; ++m; }
    if (m > 12) { m = 1; ++y; }
    if (y > last_year) return std::nullopt;
    if (!(months_ >> m & 1)) { ++m; d = 1; h = mi = s = 0; if (m > 12) { m = 1; ++y; } continue; }
    if (!day_matches(y, m, d)) { ++d; h = mi = s = 0; continue; }
    int nh = next_bit(hours_, h);
    if (nh < 0) { ++d; h = mi = s = 0; continue; }
    if (nh != h) { h = nh; mi = s = 0; }
    int nmi = next_bit(minutes_, mi);
    if (nmi < 0) { ++h; mi = s = 0; continue; }
    if (nmi != mi) { mi = nmi; s = 0; }
    int ns = next_bit(seconds_, s);
    if (ns < 0) { ++mi; s = 0; continue; }
    return sys_days(std::chrono::year{y} / m / d) + std::chrono::hours(h) + std::chrono::minutes(mi) + seconds(ns);
  }
}

CronSchedule::Time CronSchedule::next(Time after, const TimeZone& zone) const {
  if (is_every()) return after + std::chrono::duration_cast<Time::duration>(every_);
  const date::time_zone* z = tz(zone);
  sys_seconds t = std::chrono::floor<seconds>(after) + seconds(1);
  for (int guard = 0; guard < 4096; ++guard) {
    date::sys_info info = z->get_info(date::sys_seconds(t.time_since_epoch()));
    const seconds off = info.offset;
    const sys_seconds begin(info.begin.time_since_epoch()), end(info.end.time_since_epoch());
    sys_seconds start = t + off;  // local wall-clock time of t, as if UTC
    if (!hour_star_ && t - begin < days(2) && begin.time_since_epoch().count() > -(1LL << 40)) {
      // After a fall-back, local times up to begin+previous offset already happened in the
      // previous period: with a fixed hour they fired there and must not fire again.
      date::sys_info prev = z->get_info(info.begin - seconds(1));
      if (prev.offset > off && start < begin + prev.offset) start = begin + prev.offset;
    }
    auto local = next_local_match(start);
    if (!local) break;
    sys_seconds instant = *local - off;
    if (instant < end) return instant;
    date::sys_info nxt = z->get_info(info.end);
    // Spring forward: local times in [end+off, end+next offset) do not exist this day; ISC cron
    // runs them at the first instant after the gap.
    if (nxt.offset > off && *local < end + nxt.offset) return end;
    t = end;
  }
  throw CronError("cron: no fire time found for \"" + text_ + "\"");
}

std::string format_utc(sys_seconds t) {
  auto dp = std::chrono::floor<days>(t);
  std::chrono::year_month_day ymd(dp);
  std::chrono::hh_mm_ss hms(t - dp);
  char buf[40];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02d:%02d:%02dZ", int(ymd.year()), unsigned(ymd.month()),
                unsigned(ymd.day()), int(hms.hours().count()), int(hms.minutes().count()), int(hms.seconds().count()));
  return buf;
}

std::optional<std::chrono::system_clock::time_point> parse_iso8601(std::string_view s) {
  int y, mo, d, h = 0, mi = 0, sec = 0, consumed = 0;
  std::string str(s);
  if (std::sscanf(str.c_str(), "%4d-%2d-%2d%n", &y, &mo, &d, &consumed) != 3 || consumed != 10) return std::nullopt;
  std::size_t i = 10;
  std::chrono::system_clock::duration frac{0};
  seconds offset{0};
  if (i < str.size()) {
    if (str[i] != 'T' && str[i] != 't' && str[i] != ' ') return std::nullopt;
    ++i;
    if (std::sscanf(str.c_str() + i, "%2d:%2d:%2d%n", &h, &mi, &sec, &consumed) != 3 || consumed != 8) return std::nullopt;
    i += 8;
    if (i < str.size() && str[i] == '.') {
      ++i;
      std::int64_t num = 0, den = 1;
      while (i < str.size() && std::isdigit(static_cast<unsigned char>(str[i]))) {
        if (den < 1'000'000'000) { num = num * 10 + (str[i] - '0'); den *= 10; }
        ++i;
      }
      frac = std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::nanoseconds(num * (1'000'000'000 / den)));
    }
    if (i == str.size()) return std::nullopt;  // a time needs its zone: Z or an offset
    if (str[i] == 'Z' || str[i] == 'z') {
      ++i;
    } else if (str[i] == '+' || str[i] == '-') {
      int oh, om;
      if (std::sscanf(str.c_str() + i + 1, "%2d:%2d%n", &oh, &om, &consumed) != 2 || consumed != 5) return std::nullopt;
      offset = std::chrono::hours(oh) + std::chrono::minutes(om);
      if (str[i] == '-') offset = -offset;
      i += 6;
    }
    if (i != str.size()) return std::nullopt;
  }
  std::chrono::year_month_day ymd{std::chrono::year{y}, std::chrono::month(unsigned(mo)), std::chrono::day(unsigned(d))};
  if (!ymd.ok() || h > 23 || mi > 59 || sec > 60) return std::nullopt;
  return sys_days(ymd) + std::chrono::hours(h) + std::chrono::minutes(mi) + seconds(sec) + frac - offset;
}

NextFire next_fire(std::string_view cron, std::string_view timezone, CronSchedule::Time after) {
  try {
    return {CronSchedule::parse(cron).next(after, TimeZone::locate(timezone)), {}};
  } catch (const CronError& e) {
    return {std::nullopt, e.what()};
  }
}

}  // namespace agentcron
