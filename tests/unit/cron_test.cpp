// CronSchedule: syntax, errors, time zones and DST, leap days, and a property test against a
// brute-force reference built from independently generated field sets.
#include "agentcron/cron.hpp"

#include <gtest/gtest.h>

#include <bitset>
#include <random>

namespace agentcron {
namespace {

using std::chrono::sys_days;
using Time = CronSchedule::Time;

Time at(const std::string& iso) {
  auto t = parse_iso8601(iso);
  if (!t) throw std::runtime_error("bad test time " + iso);
  return *t;
}

std::string next_str(const std::string& expr, const std::string& from, const std::string& zone = "UTC") {
  auto t = CronSchedule::parse(expr).next(at(from), TimeZone::locate(zone));
  return format_utc(std::chrono::floor<std::chrono::seconds>(t));
}

std::vector<std::string> next_n(const std::string& expr, const std::string& from, int n, const std::string& zone = "UTC") {
  auto s = CronSchedule::parse(expr);
  auto z = TimeZone::locate(zone);
  std::vector<std::string> out;
  Time t = at(from);
  for (int i = 0; i < n; ++i) {
    t = s.next(t, z);
    out.push_back(format_utc(std::chrono::floor<std::chrono::seconds>(t)));
  }
  return out;
}

std::string error_of(const std::string& expr) {
  try {
    CronSchedule::parse(expr);
  } catch (const CronError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(CronSyntax, EveryMinuteAndStrictlyAfter) {
  EXPECT_EQ(next_str("* * * * *", "2026-01-01T00:00:00Z"), "2026-01-01T00:01:00Z");
  EXPECT_EQ(next_str("* * * * *", "2026-01-01T00:00:30Z"), "2026-01-01T00:01:00Z");
  EXPECT_EQ(next_str("* * * * * *", "2026-01-01T00:00:00Z"), "2026-01-01T00:00:01Z");
  EXPECT_EQ(next_str("* * * * * *", "2026-01-01T00:00:00.5Z"), "2026-01-01T00:00:01Z");
}

TEST(CronSyntax, NumbersRangesStepsAndLists) {
  EXPECT_EQ(next_n("5,10-12,*/20 * * * *", "2026-01-01T00:00:00Z", 6),
            (std::vector<std::string>{"2026-01-01T00:05:00Z", "2026-01-01T00:10:00Z", "2026-01-01T00:11:00Z",
                                      "2026-01-01T00:12:00Z", "2026-01-01T00:20:00Z", "2026-01-01T00:40:00Z"}));
  EXPECT_EQ(next_n("0 9-17/4 * * *", "2026-01-01T00:00:00Z", 4),
            (std::vector<std::string>{"2026-01-01T09:00:00Z", "2026-01-01T13:00:00Z", "2026-01-01T17:00:00Z",
                                      "2026-01-02T09:00:00Z"}));
  EXPECT_EQ(next_str("0 5/10 * * *", "2026-01-01T06:00:00Z"), "2026-01-01T15:00:00Z");  // 5-23/10
}

TEST(CronSyntax, SixFieldsHaveSecondsFirst) {
  EXPECT_EQ(next_n("*/15 * * * * *", "2026-01-01T00:00:00Z", 3),
            (std::vector<std::string>{"2026-01-01T00:00:15Z", "2026-01-01T00:00:30Z", "2026-01-01T00:00:45Z"}));
  EXPECT_EQ(next_str("30 0 12 * * *", "2026-01-01T00:00:00Z"), "2026-01-01T12:00:30Z");
}

TEST(CronSyntax, MonthAndDayNamesAnyCase) {
  EXPECT_EQ(next_str("0 0 1 jan,Jul *", "2026-02-01T00:00:00Z"), "2026-07-01T00:00:00Z");
  EXPECT_EQ(next_str("0 0 * * MON-fri", "2026-01-03T00:00:00Z"), "2026-01-05T00:00:00Z");  // Sat -> Mon
  EXPECT_EQ(next_str("0 0 * FEB-MAR SUN", "2026-01-01T00:00:00Z"), "2026-02-01T00:00:00Z");
}

TEST(CronSyntax, SundayIsZeroAndSeven) {
  EXPECT_EQ(next_str("0 0 * * 0", "2026-01-01T00:00:00Z"), "2026-01-04T00:00:00Z");
  EXPECT_EQ(next_str("0 0 * * 7", "2026-01-01T00:00:00Z"), "2026-01-04T00:00:00Z");
  EXPECT_EQ(next_str("0 0 * * 5-7", "2026-01-03T12:00:00Z"), "2026-01-04T00:00:00Z");  // Sat noon -> Sun
}

TEST(CronSyntax, Macros) {
  EXPECT_EQ(next_str("@yearly", "2026-03-01T00:00:00Z"), "2027-01-01T00:00:00Z");
  EXPECT_EQ(next_str("@annually", "2026-03-01T00:00:00Z"), "2027-01-01T00:00:00Z");
  EXPECT_EQ(next_str("@monthly", "2026-03-15T00:00:00Z"), "2026-04-01T00:00:00Z");
  EXPECT_EQ(next_str("@weekly", "2026-01-01T00:00:00Z"), "2026-01-04T00:00:00Z");
  EXPECT_EQ(next_str("@daily", "2026-01-01T10:00:00Z"), "2026-01-02T00:00:00Z");
  EXPECT_EQ(next_str("@midnight", "2026-01-01T10:00:00Z"), "2026-01-02T00:00:00Z");
  EXPECT_EQ(next_str("@hourly", "2026-01-01T10:00:00Z"), "2026-01-01T11:00:00Z");
}

TEST(CronSyntax, EveryIsAfterPlusTheInterval) {
  auto s = CronSchedule::parse("@every 30s");
  EXPECT_TRUE(s.is_every());
  Time from = at("2026-01-01T00:00:07.250Z");
  EXPECT_EQ(s.next(from, TimeZone::utc()) - from, std::chrono::seconds(30));
  EXPECT_EQ(CronSchedule::parse("@every 5m").next(from, TimeZone::utc()) - from, std::chrono::minutes(5));
  EXPECT_EQ(CronSchedule::parse("@every 1h30m").next(from, TimeZone::utc()) - from, std::chrono::minutes(90));
}

TEST(CronSyntax, DomAndDowBothRestrictedMatchEither) {
  // 13th of the month or any Friday (Vixie/ISC): from Thu 2026-01-01, Fri the 2nd comes first.
  EXPECT_EQ(next_n("0 0 13 * 5", "2026-01-01T00:00:00Z", 3),
            (std::vector<std::string>{"2026-01-02T00:00:00Z", "2026-01-09T00:00:00Z", "2026-01-13T00:00:00Z"}));
}

TEST(CronSyntax, StarredDomMeansBothMustMatch) {
  // "*/2" starts with '*': day-of-month counts as unrestricted, so both fields must match:
  // odd days that are Mondays.
  EXPECT_EQ(next_n("0 0 */2 * 1", "2026-01-01T00:00:00Z", 2),
            (std::vector<std::string>{"2026-01-05T00:00:00Z", "2026-01-19T00:00:00Z"}));
}

TEST(CronSyntax, StarredStepInBothDayFieldsStillRestricts) {
  // Vixie ANDs the two day fields whenever either starts with '*': "*/11" is days 1, 12, 23.
  EXPECT_EQ(next_n("0 0 */11 * *", "2026-01-02T00:00:00Z", 3),
            (std::vector<std::string>{"2026-01-12T00:00:00Z", "2026-01-23T00:00:00Z", "2026-02-01T00:00:00Z"}));
}

TEST(CronSyntax, MonthEnds) {
  EXPECT_EQ(next_n("0 0 31 * *", "2026-01-31T00:00:00Z", 3),
            (std::vector<std::string>{"2026-03-31T00:00:00Z", "2026-05-31T00:00:00Z", "2026-07-31T00:00:00Z"}));
  EXPECT_EQ(next_str("0 0 30 * *", "2026-01-30T00:00:00Z"), "2026-03-30T00:00:00Z");
  EXPECT_EQ(next_str("59 23 * * *", "2026-12-31T23:59:00Z"), "2027-01-01T23:59:00Z");
}

TEST(CronSyntax, LeapDays) {
  EXPECT_EQ(next_str("0 0 29 2 *", "2027-01-01T00:00:00Z"), "2028-02-29T00:00:00Z");
  EXPECT_EQ(next_str("0 0 29 2 *", "2028-02-29T00:00:00Z"), "2032-02-29T00:00:00Z");
  // 2100 is not a leap year: from 2097 the next 29 February is in 2104.
  EXPECT_EQ(next_str("0 0 29 2 *", "2097-01-01T00:00:00Z"), "2104-02-29T00:00:00Z");
}

struct BadCase {
  std::string expr;
  std::string message;
};

TEST(CronErrors, NameTheFieldTheTextAndWhy) {
  const BadCase cases[] = {
      {"0 24 * * *", "cron: field 2 (hour): 24 is out of range 0-23 in \"0 24 * * *\""},
      {"60 * * * *", "cron: field 1 (minute): 60 is out of range 0-59"},
      {"* * * * * * *", "cron: expected 5 or 6 fields, got 7"},
      {"* * * *", "cron: expected 5 or 6 fields, got 4"},
      {"", "cron: expected 5 or 6 fields, got 0"},
      {"0 0 0 * *", "field 3 (day-of-month): 0 is out of range 1-31"},
      {"0 0 * 13 *", "field 4 (month): 13 is out of range 1-12"},
      {"0 0 * * 8", "field 5 (day-of-week): 8 is out of range 0-7"},
      {"61 * * * * *", "field 1 (second): 61 is out of range 0-59"},
      {"30-10 * * * *", "field 1 (minute): range 30-10 is reversed"},
      {"*/0 * * * *", "field 1 (minute): step 0 is not allowed"},
      {"*/60 * * * *", "field 1 (minute): step 60 is larger than the field's range 0-59"},
      {"0 */24 * * *", "field 2 (hour): step 24 is larger"},
      {"0 0 * FOO *", "field 4 (month): unknown name \"FOO\""},
      {"0 0 * * FUNDAY", "field 5 (day-of-week): unknown name \"FUNDAY\""},
      {"1,,2 * * * *", "field 1 (minute): empty list item"},
      {"1, * * * *", "field 1 (minute): empty list item"},
      {"0 0 30 2 *", "never fires"},
      {"0 0 31 4,6,9,11 *", "never fires"},
      {"x * * * *", "field 1 (minute): \"x\" is not a number"},
      {"*/x * * * *", "field 1 (minute): step \"x\" is not a number"},
      {"@often", "cron: unknown macro @often"},
      {"@every", "cron: @every needs a duration"},
      {"@every 10parsecs", "cron: @every needs a duration"},
      {"@daily 5", "@daily takes no arguments"},
      {"@every 99999999d", "cron: @every is at most 366d"},
      {"? * * * *", "field 1 (minute): \"?\" is not a number"},
  };
  for (const auto& c : cases) {
    std::string e = error_of(c.expr);
    EXPECT_NE(e.find(c.message), std::string::npos) << "expr: \"" << c.expr << "\"\n got: " << e;
  }
}

TEST(CronErrors, UnknownZone) {
  EXPECT_FALSE(TimeZone::find("Mars/Olympus_Mons"));
  EXPECT_THROW(TimeZone::locate("Mars/Olympus_Mons"), CronError);
  EXPECT_TRUE(TimeZone::find("Europe/Berlin"));
}

TEST(CronZones, FixedTimesInAZone) {
  EXPECT_EQ(next_str("0 9 * * *", "2026-05-31T23:00:00Z", "Asia/Tokyo"), "2026-06-01T00:00:00Z");
  EXPECT_EQ(next_str("0 9 * * *", "2026-06-01T00:00:00Z", "Asia/Tokyo"), "2026-06-02T00:00:00Z");  // strictly after
  EXPECT_EQ(next_str("0 9 * * *", "2026-06-01T00:00:00Z", "Asia/Kolkata"), "2026-06-01T03:30:00Z");
}

// The acceptance example: 02:30 on the spring-forward night runs at 03:00 EDT.
TEST(CronDst, NewYorkSpringForwardGapFiresAfterTheGap) {
  EXPECT_EQ(next_n("30 2 * * *", "2026-03-07T12:00:00Z", 2, "America/New_York"),
            (std::vector<std::string>{"2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"}));
  // Several times inside the gap fire once, at its end.
  EXPECT_EQ(next_n("*/20 2 * * *", "2026-03-08T06:00:00Z", 2, "America/New_York"),
            (std::vector<std::string>{"2026-03-08T07:00:00Z", "2026-03-09T06:00:00Z"}));
}

TEST(CronDst, NewYorkFallBackFixedHourFiresOnceAtFirstOccurrence) {
  EXPECT_EQ(next_n("30 1 * * *", "2026-10-31T12:00:00Z", 2, "America/New_York"),
            (std::vector<std::string>{"2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"}));
}

TEST(CronDst, NewYorkFallBackStarHourFiresEachRealHour) {
  EXPECT_EQ(next_n("30 * * * *", "2026-11-01T05:00:00Z", 3, "America/New_York"),
            (std::vector<std::string>{"2026-11-01T05:30:00Z", "2026-11-01T06:30:00Z", "2026-11-01T07:30:00Z"}));
}

TEST(CronDst, BerlinGapAndOverlap) {
  EXPECT_EQ(next_n("30 2 * * *", "2026-03-28T12:00:00Z", 2, "Europe/Berlin"),
            (std::vector<std::string>{"2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"}));
  EXPECT_EQ(next_n("30 2 * * *", "2026-10-24T12:00:00Z", 2, "Europe/Berlin"),
            (std::vector<std::string>{"2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"}));
}

TEST(CronDst, LondonGapAndOverlap) {
  EXPECT_EQ(next_n("30 1 * * *", "2026-03-28T12:00:00Z", 2, "Europe/London"),
            (std::vector<std::string>{"2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"}));
  EXPECT_EQ(next_n("30 1 * * *", "2026-10-24T12:00:00Z", 2, "Europe/London"),
            (std::vector<std::string>{"2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"}));
}

TEST(CronDst, SydneyOverlapInAprilGapInOctober) {
  EXPECT_EQ(next_n("30 2 * * *", "2026-04-04T00:00:00Z", 2, "Australia/Sydney"),
            (std::vector<std::string>{"2026-04-04T15:30:00Z", "2026-04-05T16:30:00Z"}));
  EXPECT_EQ(next_n("30 2 * * *", "2026-10-03T00:00:00Z", 2, "Australia/Sydney"),
            (std::vector<std::string>{"2026-10-03T16:00:00Z", "2026-10-04T15:30:00Z"}));
}

TEST(CronDst, AucklandOverlapAndGap) {
  EXPECT_EQ(next_n("15 2 * * *", "2026-04-04T00:00:00Z", 2, "Pacific/Auckland"),
            (std::vector<std::string>{"2026-04-04T13:15:00Z", "2026-04-05T14:15:00Z"}));
  EXPECT_EQ(next_n("15 2 * * *", "2026-09-26T00:00:00Z", 2, "Pacific/Auckland"),
            (std::vector<std::string>{"2026-09-26T14:00:00Z", "2026-09-27T13:15:00Z"}));  // then NZDT, +13
}

TEST(CronDst, SantiagoMidnightTransitions) {
  EXPECT_EQ(next_n("30 23 * * *", "2026-04-04T12:00:00Z", 2, "America/Santiago"),
            (std::vector<std::string>{"2026-04-05T02:30:00Z", "2026-04-06T03:30:00Z"}));
  EXPECT_EQ(next_n("30 0 * * *", "2026-09-05T12:00:00Z", 2, "America/Santiago"),
            (std::vector<std::string>{"2026-09-06T04:00:00Z", "2026-09-07T03:30:00Z"}));
}

TEST(CronDst, LordHoweHalfHourShift) {
  EXPECT_EQ(next_str("15 2 * * *", "2026-10-03T00:00:00Z", "Australia/Lord_Howe"), "2026-10-03T15:30:00Z");
}

TEST(CronIso, ParsesOffsetsAndRejectsJunk) {
  EXPECT_EQ(format_utc(std::chrono::floor<std::chrono::seconds>(at("2026-03-07T07:00:00-05:00"))), "2026-03-07T12:00:00Z");
  EXPECT_EQ(format_utc(std::chrono::floor<std::chrono::seconds>(at("2026-03-07"))), "2026-03-07T00:00:00Z");
  EXPECT_FALSE(parse_iso8601("2026-13-01T00:00:00Z"));
  EXPECT_FALSE(parse_iso8601("2026-03-07T12:00:00"));
  EXPECT_FALSE(parse_iso8601("yesterday"));
}

// ---- property test -------------------------------------------------------------------------

struct Field {
  std::string text;
  std::vector<bool> set;  // by value
  bool star = false;
};

// Builds a random field and, independently of the parser, the set it denotes.
Field random_field(std::mt19937& rng, int lo, int hi, bool dow = false) {
  std::uniform_int_distribution<int> pick(0, 99);
  Field f;
  f.set.assign(hi + 1, false);
  int kind = pick(rng);
  int span_hi = dow ? 6 : hi;
  if (kind < 35) {
    f.text = "*";
    f.star = true;
    for (int v = lo; v <= span_hi; ++v) f.set[v] = true;
  } else if (kind < 50) {
    int step = std::uniform_int_distribution<int>(1, std::max(1, (span_hi - lo) / 2))(rng);
    f.text = "*/" + std::to_string(step);
    f.star = true;
    for (int v = lo; v <= span_hi; v += step) f.set[v] = true;
  } else {
    int items = std::uniform_int_distribution<int>(1, 3)(rng);
    for (int i = 0; i < items; ++i) {
      int a = std::uniform_int_distribution<int>(lo, hi)(rng);
      int b = std::uniform_int_distribution<int>(a, hi)(rng);
      if (!f.text.empty()) f.text += ",";
      if (pick(rng) < 50) {
        f.text += std::to_string(a);
        f.set[a] = true;
      } else {
        int step = pick(rng) < 50 ? 1 : std::uniform_int_distribution<int>(1, std::max(1, (span_hi - lo) / 2))(rng);
        f.text += std::to_string(a) + "-" + std::to_string(b) + (step > 1 ? "/" + std::to_string(step) : "");
        for (int v = a; v <= b; v += step) f.set[v] = true;
      }
    }
  }
  if (dow && f.set.size() > 7 && f.set[7]) f.set[0] = true;
  return f;
}

struct Reference {
  Field sec, min, hour, dom, mon, dow;
  bool matches_day(int y, unsigned m, unsigned d) const {
    if (!mon.set[m]) return false;
    unsigned wd = std::chrono::weekday(sys_days(std::chrono::year{y} / m / d)).c_encoding();
    bool a = dom.set[d], b = dow.set[wd];
    if (dom.star || dow.star) return a && b;
    return a || b;
  }
  // The first matching instant strictly after `after`, searching day by day up to `limit`.
  std::optional<std::chrono::sys_seconds> first_after(std::chrono::sys_seconds after, std::chrono::sys_seconds limit) const {
    for (auto day = std::chrono::floor<std::chrono::days>(after); day <= limit; day += std::chrono::days(1)) {
      std::chrono::year_month_day ymd(day);
      if (!matches_day(int(ymd.year()), unsigned(ymd.month()), unsigned(ymd.day()))) continue;
      for (int h = 0; h < 24; ++h) {
        if (!hour.set[h]) continue;
        for (int mi = 0; mi < 60; ++mi) {
          if (!min.set[mi]) continue;
          for (int s = 0; s < 60; ++s) {
            if (!sec.set[s]) continue;
            auto t = day + std::chrono::hours(h) + std::chrono::minutes(mi) + std::chrono::seconds(s);
            if (t > after) return t;
          }
        }
      }
    }
    return std::nullopt;
  }
};

TEST(CronProperty, NextMatchesAndSkipsNothingOnThousandsOfRandomExpressions) {
  std::mt19937 rng(20261122);
  int checked = 0, rejected = 0;
  for (int i = 0; i < 4000; ++i) {
    Reference r;
    bool six = i % 3 == 0;
    r.sec = six ? random_field(rng, 0, 59) : Field{"0", std::vector<bool>(60, false), false};
    if (!six) r.sec.set[0] = true;
    r.min = random_field(rng, 0, 59);
    r.hour = random_field(rng, 0, 23);
    r.dom = random_field(rng, 1, 31);
    r.mon = random_field(rng, 1, 12);
    r.dow = random_field(rng, 0, 7, true);
    std::string expr = (six ? r.sec.text + " " : "") + r.min.text + " " + r.hour.text + " " + r.dom.text + " " +
                       r.mon.text + " " + r.dow.text;
    std::optional<CronSchedule> s;
    try {
      s = CronSchedule::parse(expr);
    } catch (const CronError& e) {
      // Only a schedule that can never fire may be refused; check that the reference agrees.
      std::string msg = e.what();
      ASSERT_NE(msg.find("never fires"), std::string::npos) << expr << ": " << msg;
      ASSERT_FALSE(r.first_after(std::chrono::sys_seconds(std::chrono::sys_days(std::chrono::year{2024} / 1 / 1)),
                                 std::chrono::sys_days(std::chrono::year{2032} / 12 / 31)))
          << expr;
      ++rejected;
      continue;
    }
    auto start = std::chrono::sys_days(std::chrono::year{2020} / 1 / 1) +
                 std::chrono::seconds(std::uniform_int_distribution<std::int64_t>(0, 86400LL * 365 * 12)(rng));
    auto got = std::chrono::floor<std::chrono::seconds>(s->next(start, TimeZone::utc()));
    auto want = r.first_after(start, got);
    ASSERT_TRUE(want) << expr << " from " << format_utc(start) << ": next() gave " << format_utc(got)
                      << " but the reference found nothing up to it";
    ASSERT_EQ(format_utc(*want), format_utc(got)) << expr << " from " << format_utc(start);
    ASSERT_TRUE(s->matches_local(got)) << expr;
    ++checked;
  }
  EXPECT_GT(checked, 3500);
  RecordProperty("rejected_never_firing", rejected);
}

}  // namespace
}  // namespace agentcron
