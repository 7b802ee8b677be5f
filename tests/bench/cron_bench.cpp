// Nanoseconds per CronSchedule::next() for typical and pathological expressions, in UTC and in
// a zone with DST. next() runs for every recurring task of a batch, so it must stay cheap.
#include <benchmark/benchmark.h>

#include "agentcron/cron.hpp"

namespace {

using agentcron::CronSchedule;
using agentcron::TimeZone;

void next_from_many_times(benchmark::State& state, const char* expr, const char* zone) {
  auto s = CronSchedule::parse(expr);
  auto z = TimeZone::locate(zone);
  auto t = *agentcron::parse_iso8601("2026-01-01T00:00:00Z");
  std::int64_t i = 0;
  for (auto _ : state) {
    // A different start each call (a prime number of seconds apart), across several years.
    auto from = t + std::chrono::seconds((i++ * 7919) % (86400LL * 365 * 6));
    benchmark::DoNotOptimize(s.next(from, z));
  }
}

#define CRON_BENCH(name, expr, zone) BENCHMARK_CAPTURE(next_from_many_times, name, expr, zone)

// Typical
CRON_BENCH(every_5_minutes_utc, "*/5 * * * *", "UTC");
CRON_BENCH(every_5_seconds_utc, "*/5 * * * * *", "UTC");
CRON_BENCH(weekdays_at_9_new_york, "0 9 * * MON-FRI", "America/New_York");
CRON_BENCH(daily_0230_new_york_dst, "30 2 * * *", "America/New_York");
CRON_BENCH(hourly_sydney, "@hourly", "Australia/Sydney");
CRON_BENCH(every_30s, "@every 30s", "UTC");
// Pathological: rare matches, long searches
CRON_BENCH(leap_day_only, "0 0 29 2 *", "UTC");
CRON_BENCH(leap_day_that_is_a_monday_and, "0 0 */29 2 1", "UTC");
CRON_BENCH(last_second_of_year, "59 59 23 31 12 *", "Europe/Berlin");
CRON_BENCH(friday_13th_or_rule, "0 0 13 * 5", "UTC");
CRON_BENCH(every_second_lord_howe, "* * * * * *", "Australia/Lord_Howe");
CRON_BENCH(sparse_lists, "7,53 3,21 1,28 2,11 *", "Pacific/Auckland");

void parse(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(CronSchedule::parse("*/15 0-23/2 1,15 JAN-JUN MON-FRI"));
}
BENCHMARK(parse);

}  // namespace

BENCHMARK_MAIN();
