// Telemetry (see telemetry.hpp).
#include "agentcron/telemetry.hpp"

#include <cstdio>

namespace agentcron {

namespace {
std::string number(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

// A bucket bound as people write it ("0.005", not 0.0050000000000000001).
std::string bound(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

std::string header(const char* name, const char* type, const char* help) {
  return std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

std::string braces(const std::string& labels) { return labels.empty() ? "" : "{" + labels + "}"; }
}  // namespace

std::string prom_label(std::string_view name, std::string_view value) {
  std::string out(name);
  out += "=\"";
  for (char c : value) {
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    if (c == '\\' || c == '"') out += '\\';
    out += c;
  }
  return out + "\"";
}

void HistogramFamily::observe(const std::string& labels, double value) {
  std::lock_guard lock(mu_);
  auto it = series_.find(labels);
  if (it == series_.end()) {
    if (series_.size() >= kMaxSeries) return;
    it = series_.emplace(labels, Series{std::vector<std::uint64_t>(bounds_.size(), 0), 0, 0}).first;
  }
  Series& s = it->second;
  for (std::size_t i = 0; i < bounds_.size(); ++i)
    if (value <= bounds_[i]) {
      ++s.buckets[i];
      break;
    }
  s.sum += value;
  ++s.count;
}

std::string HistogramFamily::render(const char* name, const char* help) const {
  std::string out = header(name, "histogram", help);
  std::lock_guard lock(mu_);
  for (const auto& [labels, s] : series_) {
    std::string sep = labels.empty() ? "" : labels + ",";
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < bounds_.size(); ++i) {
      cumulative += s.buckets[i];
      out += std::string(name) + "_bucket{" + sep + "le=\"" + bound(bounds_[i]) + "\"} " + std::to_string(cumulative) + "\n";
    }
    out += std::string(name) + "_bucket{" + sep + "le=\"+Inf\"} " + std::to_string(s.count) + "\n";
    out += std::string(name) + "_sum" + braces(labels) + " " + number(s.sum) + "\n";
    out += std::string(name) + "_count" + braces(labels) + " " + std::to_string(s.count) + "\n";
  }
  return out;
}

void CounterFamily::add(const std::string& labels, std::uint64_t n) {
  std::lock_guard lock(mu_);
  auto it = series_.find(labels);
  if (it == series_.end()) {
    if (series_.size() >= kMaxSeries) return;
    it = series_.emplace(labels, 0).first;
  }
  it->second += n;
}

std::string CounterFamily::render(const char* name, const char* help) const {
  std::string out = header(name, "counter", help);
  std::lock_guard lock(mu_);
  for (const auto& [labels, n] : series_) out += std::string(name) + braces(labels) + " " + std::to_string(n) + "\n";
  return out;
}

std::string Telemetry::render() const {
  return task_duration.render("agentcron_task_duration_seconds",
                              "Handler run time, from its start to its outcome, by kind and outcome.") +
         pickup_lag.render("agentcron_task_pickup_lag_seconds",
                           "From a task's scheduled time to its claim (database clock), by kind.") +
         statement_duration.render("agentcron_statement_duration_seconds",
                                   "Database statements of the worker, round trip included, by statement.") +
         database_errors.render("agentcron_database_errors_total", "Failed statements, by SQLSTATE class.");
}

}  // namespace agentcron
