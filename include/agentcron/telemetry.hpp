// Telemetry: the latency histograms and error counters the services record into and /metrics
// renders (Prometheus text format). Each family holds its series by label set under a lock of
// its own, at most kMaxSeries of them (labels come from bounded sets: the kinds this worker
// handles, the outcomes, the statements, SQLSTATE classes).
#pragma once
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace agentcron {

// `name="value"`, the value escaped for the text format.
std::string prom_label(std::string_view name, std::string_view value);

class HistogramFamily {
 public:
  explicit HistogramFamily(std::vector<double> bounds) : bounds_(std::move(bounds)) {}
  // `labels`: rendered pairs (prom_label(…) + "," + …), "" for none.
  void observe(const std::string& labels, double value);
  // HELP, TYPE and every series' buckets, sum and count.
  std::string render(const char* name, const char* help) const;

 private:
  struct Series {
    std::vector<std::uint64_t> buckets;  // per bound, not cumulative
    double sum = 0;
    std::uint64_t count = 0;
  };
  std::vector<double> bounds_;
  mutable std::mutex mu_;
  std::map<std::string, Series> series_;
};

class CounterFamily {
 public:
  void add(const std::string& labels, std::uint64_t n = 1);
  std::string render(const char* name, const char* help) const;

 private:
  mutable std::mutex mu_;
  std::map<std::string, std::uint64_t> series_;
};

inline constexpr std::size_t kMaxSeries = 1000;

struct Telemetry {
  // A handler's run, claim to outcome: by kind and outcome (succeeded, retried, failed).
  HistogramFamily task_duration{{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900}};
  // From a task's scheduled time to its claim, both by the database's clock: by kind.
  HistogramFamily pickup_lag{{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300}};
  // Each statement of the store, round trip included: by statement (agentcron_claim, …).
  HistogramFamily statement_duration{{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}};
  // Statements that failed, by SQLSTATE class ("08" connection, "57" operator intervention, …;
  // "none" when the client gave up without one).
  CounterFamily database_errors;

  std::string render() const;
};

}  // namespace agentcron
