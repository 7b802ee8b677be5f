// The Prometheus exposition and the metrics HTTP server (real sockets on loopback; no database).
#include "agentcron/metrics.hpp"

#include <gtest/gtest.h>
#include <httplib.h>
#include <spdlog/sinks/ostream_sink.h>

#include <algorithm>
#include <atomic>
#include <regex>
#include <set>
#include <sstream>

#include "agentcron/log.hpp"
#include "agentcron/telemetry.hpp"

namespace agentcron {
namespace {

MetricsSnapshot sample_snapshot() {
  MetricsSnapshot s;
  s.worker = "host:42 \"quoted\" \\ back";
  s.poller.ticks = 12;
  s.poller.claims = 9;
  s.poller.claimed = 700;
  s.poller.notifications = 3;
  s.poller.errors = 1;
  s.completer.succeeded = 690;
  s.completer.retried = 4;
  s.completer.failed = 2;
  s.completer.released = 1;
  s.pool.busy = 2;
  s.pool.idle = 1;
  s.pool.opened_total = 5;
  s.pool.acquire_wait_max = std::chrono::milliseconds(1500);
  s.connection_limit = 4;
  s.running = 3;
  s.concurrency = 1000;
  s.outcomes_unwritten = 7;
  s.seconds_since_tick = 0.25;
  s.circuit_open = true;
  s.listening = true;
  return s;
}

TEST(Metrics, ExpositionIsWellFormedPrometheusText) {
  std::string text = render_metrics(sample_snapshot());
  std::istringstream in(text);
  std::regex sample_line(R"(^([a-z_]+)(\{[a-z_]+="(?:[^"\\]|\\.)*"\})? (-?[0-9.e+-]+)$)");
  std::set<std::string> typed;
  std::string line;
  int samples = 0;
  while (std::getline(in, line)) {
    if (line.rfind("# HELP ", 0) == 0) continue;
    if (line.rfind("# TYPE ", 0) == 0) {
      std::istringstream t(line.substr(7));
      std::string name, type;
      t >> name >> type;
      EXPECT_TRUE(type == "counter" || type == "gauge") << line;
      EXPECT_TRUE(type != "counter" || (name.size() > 6 && name.substr(name.size() - 6) == "_total")) << line;
      typed.insert(name);
      continue;
    }
    std::smatch m;
    ASSERT_TRUE(std::regex_match(line, m, sample_line)) << "not a sample line: " << line;
    EXPECT_TRUE(typed.count(m[1])) << "sample before its TYPE line: " << line;
    ++samples;
  }
  EXPECT_GE(samples, 20);
}

TEST(Metrics, ExpositionCarriesTheNumbers) {
  std::string text = render_metrics(sample_snapshot());
  for (const char* expected : {
           "agentcron_info{worker=\"host:42 \\\"quoted\\\" \\\\ back\"} 1\n",
           "agentcron_tasks_claimed_total 700\n",
           "agentcron_tasks_finished_total{outcome=\"succeeded\"} 690\n",
           "agentcron_tasks_finished_total{outcome=\"retried\"} 4\n",
           "agentcron_tasks_finished_total{outcome=\"failed\"} 2\n",
           "agentcron_tasks_finished_total{outcome=\"released\"} 1\n",
           "agentcron_claim_errors_total 1\n",
           "agentcron_outcomes_unwritten 7\n",
           "agentcron_tasks_running 3\n",
           "agentcron_slots 1000\n",
           "agentcron_pool_connections{state=\"busy\"} 2\n",
           "agentcron_pool_connections{state=\"idle\"} 1\n",
           "agentcron_pool_connection_limit 4\n",
           "agentcron_pool_acquire_wait_seconds_max 1.5\n",
           "agentcron_seconds_since_last_tick 0.25\n",
           "agentcron_database_circuit_open 1\n",
           "agentcron_listening 1\n",
       })
    EXPECT_NE(text.find(expected), std::string::npos) << "missing: " << expected << "in:\n" << text;
}

class MetricsServerTest : public ::testing::Test {
 protected:
  std::ostringstream logs;
  Logger log{LogFormat::text, LogLevel::info, std::make_shared<spdlog::sinks::ostream_sink_mt>(logs)};
  std::atomic<bool> ready{false};
  MetricsServer::Sources sources{[] { return std::string("agentcron_up 1\n"); },
                                 [this] { return ready ? Readiness{true, ""} : Readiness{false, "waiting for the database"}; }};
};

TEST_F(MetricsServerTest, ServesMetricsHealthAndReadiness) {
  MetricsServer server(sources, log);
  ASSERT_TRUE(server.start("127.0.0.1:0")) << logs.str();
  ASSERT_GT(server.port(), 0);
  httplib::Client client("127.0.0.1", server.port());

  auto health = client.Get("/healthz");
  ASSERT_TRUE(health) << httplib::to_string(health.error());
  EXPECT_EQ(health->status, 200);

  auto not_ready = client.Get("/readyz");
  ASSERT_TRUE(not_ready);
  EXPECT_EQ(not_ready->status, 503);
  EXPECT_EQ(not_ready->body, "waiting for the database\n");
  ready = true;
  auto is_ready = client.Get("/readyz");
  ASSERT_TRUE(is_ready);
  EXPECT_EQ(is_ready->status, 200);

  auto metrics = client.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->status, 200);
  EXPECT_EQ(metrics->body, "agentcron_up 1\n");
  EXPECT_EQ(metrics->get_header_value("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");

  EXPECT_EQ(client.Get("/nothing-here")->status, 404);
  int port = server.port();
  server.stop();
  EXPECT_EQ(server.port(), 0);
  EXPECT_FALSE(httplib::Client("127.0.0.1", port).Get("/healthz")) << "still answering after stop()";
}

TEST_F(MetricsServerTest, AnAddressInUseIsAWarningNotAFailure) {
  MetricsServer first(sources, log);
  ASSERT_TRUE(first.start("127.0.0.1:0"));
  MetricsServer second(sources, log);
  EXPECT_FALSE(second.start("127.0.0.1:" + std::to_string(first.port())));
  EXPECT_EQ(second.port(), 0);
  EXPECT_NE(logs.str().find("metrics.listen: cannot listen there"), std::string::npos) << logs.str();
  EXPECT_NE(logs.str().find("127.0.0.1:" + std::to_string(first.port())), std::string::npos) << logs.str();
  // The first still serves.
  auto r = httplib::Client("127.0.0.1", first.port()).Get("/healthz");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST_F(MetricsServerTest, StopRightAfterStartDoesNotHang) {
  // stop() may come before the serving thread has entered its accept loop.
  for (int i = 0; i < 20; ++i) {
    MetricsServer server(sources, log);
    ASSERT_TRUE(server.start("127.0.0.1:0"));
    server.stop();
  }
}

}  // namespace
}  // namespace agentcron

namespace agentcron {
namespace {

TEST(Telemetry, HistogramBucketsAreCumulativeWithSumCountAndEscapedLabels) {
  Telemetry t;
  std::string kind = prom_label("kind", "a\"b\\c\nd");
  EXPECT_EQ(kind, "kind=\"a\\\"b\\\\c\\nd\"");
  for (double v : {0.003, 0.02, 0.02, 7.0, 5000.0}) t.task_duration.observe(kind + "," + prom_label("outcome", "failed"), v);
  t.database_errors.add(prom_label("class", "08"));
  t.database_errors.add(prom_label("class", "08"), 2);
  std::string out = t.render();
  const std::string series = "agentcron_task_duration_seconds_bucket{kind=\"a\\\"b\\\\c\\nd\",outcome=\"failed\",le=";
  EXPECT_NE(out.find(series + "\"0.005\"} 1\n"), std::string::npos) << out;
  EXPECT_NE(out.find(series + "\"0.025\"} 3\n"), std::string::npos) << out;
  EXPECT_NE(out.find(series + "\"10\"} 4\n"), std::string::npos) << out;
  EXPECT_NE(out.find(series + "\"900\"} 4\n"), std::string::npos) << out;
  EXPECT_NE(out.find(series + "\"+Inf\"} 5\n"), std::string::npos) << out;
  EXPECT_NE(out.find("agentcron_task_duration_seconds_sum{kind=\"a\\\"b\\\\c\\nd\",outcome=\"failed\"} 5007.04"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("agentcron_task_duration_seconds_count{kind=\"a\\\"b\\\\c\\nd\",outcome=\"failed\"} 5\n"),
            std::string::npos);
  EXPECT_NE(out.find("# TYPE agentcron_task_pickup_lag_seconds histogram\n"), std::string::npos);
  EXPECT_NE(out.find("agentcron_database_errors_total{class=\"08\"} 3\n"), std::string::npos);
}

TEST(Telemetry, SeriesAreBoundedSoUnboundedLabelsCannotGrowMemory) {
  HistogramFamily h({1});
  for (std::size_t i = 0; i < kMaxSeries + 50; ++i) h.observe(prom_label("kind", std::to_string(i)), 0.5);
  std::string out = h.render("x_seconds", "x");
  EXPECT_EQ(static_cast<std::size_t>(std::count(out.begin(), out.end(), '\n')), 2 + kMaxSeries * 4);
}

}  // namespace
}  // namespace agentcron
