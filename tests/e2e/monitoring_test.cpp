// /metrics of a running worker, and the monitoring files shipped beside it
// (packaging/monitoring/): the dashboard and the alert rules name only metrics the binary exposes.
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "support/loopback.hpp"
#include "support/files.hpp"
#include "support/process.hpp"
#include "support/test_db.hpp"

namespace agentcron {
namespace {

using namespace std::chrono_literals;
using testing::eventually;
using testing::Process;
using testing::slurp;
using testing::TestDatabase;

// Every name a scrape can show: each family of a "# TYPE" line, with a histogram's series.
std::set<std::string> exposed_names(const std::string& metrics) {
  std::set<std::string> names;
  std::regex type("# TYPE (agentcron_[a-z0-9_]+) ([a-z]+)");
  for (std::sregex_iterator it(metrics.begin(), metrics.end(), type), end; it != end; ++it) {
    std::string name = (*it)[1];
    names.insert(name);
    if ((*it)[2] == "histogram")
      for (const char* suffix : {"_bucket", "_sum", "_count"}) names.insert(name + suffix);
  }
  return names;
}

class MonitoringE2E : public ::testing::Test {
 protected:
  TestDatabase db;
  std::string config_path = "/tmp/agentcron-e2e-monitoring-" + std::to_string(::getpid()) + ".toml";
  void TearDown() override { ::unlink(config_path.c_str()); }
};

TEST_F(MonitoringE2E, MetricsCarryHistogramsQueueGaugesAndErrorClassesAndTheDashboardAndAlertsUseOnlyThem) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  int port = testing::bind_loopback(fd, 0);
  ::close(fd);
  std::ofstream(config_path) << "[database]\nurl = \"" << db.url() << "\"\nconnection_limit = 4\n"
                             << "[scheduler]\nschedule = \"@every 200ms\"\n"
                             << "[metrics]\nlisten = \"127.0.0.1:" << port << "\"\n[log]\nformat = \"json\"\n"
                             << "[handlers.ok]\ntype = \"notify\"\n"
                             << "[handlers.bad]\ntype = \"exec\"\ncommand = [\"/bin/sh\", \"-c\", \"exit 65\"]\n";
  db.exec("INSERT INTO agentcron.agent_tasks (kind) SELECT 'ok' FROM generate_series(1, 3)");
  db.exec("INSERT INTO agentcron.agent_tasks (kind, scheduled_for) VALUES ('bad', now() - interval '2 seconds')");
  Process worker({"--config", config_path, "run"});
  ASSERT_TRUE(eventually([&] {
    return db.scalar("SELECT count(*) FROM agentcron.agent_tasks WHERE status IN ('succeeded', 'failed')") == 4;
  })) << worker.err();

  httplib::Client client("127.0.0.1", port);
  std::string metrics;
  // The outcomes' histograms are recorded once the completer wrote them.
  ASSERT_TRUE(eventually([&] {
    auto res = client.Get("/metrics");
    if (!res || res->status != 200) return false;
    metrics = res->body;
    // The queue gauges come from a sample the first scrape asked for, taken on another thread.
    return metrics.find("agentcron_task_duration_seconds_count{kind=\"bad\",outcome=\"failed\"} 1") != std::string::npos &&
           metrics.find("agentcron_queue_tasks{status=\"failed\"} 1\n") != std::string::npos;
  }, 10s)) << metrics << worker.err();
  for (const char* expected :
       {"agentcron_task_duration_seconds_bucket{kind=\"ok\",outcome=\"succeeded\",le=\"+Inf\"} 3\n",
        "agentcron_task_pickup_lag_seconds_count{kind=\"ok\"} 3\n",
        "agentcron_task_pickup_lag_seconds_bucket{kind=\"bad\",le=\"1\"} 0\n",  // it waited two seconds
        "agentcron_statement_duration_seconds_bucket{statement=\"agentcron_claim\",le=\"+Inf\"}",
        "agentcron_statement_duration_seconds_count{statement=\"agentcron_complete\"}",
        "# TYPE agentcron_database_errors_total counter\n", "agentcron_queue_tasks{status=\"succeeded\"} 3\n",
        "agentcron_queue_tasks{status=\"failed\"} 1\n", "agentcron_queue_due 0\n", "agentcron_queue_estimated 0\n",
        "agentcron_database_max_connections ", "agentcron_database_connections{scope=\"agentcron\"} ",
        "agentcron_tasks_rescued_total 0\n", "agentcron_tasks_cancelled_total 0\n"})
    EXPECT_NE(metrics.find(expected), std::string::npos) << expected << "\n" << metrics;

  // A failing statement is counted by its SQLSTATE class: the claim fails while a table it reads
  // is missing (42P01, class 42).
  db.exec("ALTER TABLE agentcron.paused_kinds RENAME TO paused_kinds_gone");
  ASSERT_TRUE(eventually([&] {
    auto res = client.Get("/metrics");
    return res && res->body.find("agentcron_database_errors_total{class=\"42\"}") != std::string::npos;
  }, 10s)) << worker.err();
  db.exec("ALTER TABLE agentcron.paused_kinds_gone RENAME TO paused_kinds");

  std::set<std::string> names = exposed_names(metrics);
  EXPECT_GT(names.size(), 40u);
  for (const char* file : {"/packaging/monitoring/agentcron-dashboard.json", "/packaging/monitoring/agentcron-alerts.yml"}) {
    std::string text = slurp(std::string(AGENTCRON_SOURCE_DIR) + file);
    ASSERT_FALSE(text.empty()) << file;
    std::regex token("agentcron_[a-z0-9_]+");
    int used = 0;
    for (std::sregex_iterator it(text.begin(), text.end(), token), end; it != end; ++it, ++used)
      EXPECT_TRUE(names.count(it->str())) << file << " names " << it->str() << ", which the worker does not expose";
    EXPECT_GT(used, 10) << file;
  }
  std::string alerts = slurp(std::string(AGENTCRON_SOURCE_DIR) + "/packaging/monitoring/agentcron-alerts.yml");
  for (const char* alert : {"AgentcronPoolUtilisationHigh", "AgentcronPoolUtilisationCritical", "AgentcronOldestDueTaskOld",
                            "AgentcronTaskFailureRateHigh", "AgentcronCircuitBreakerOpen", "AgentcronNoClaimRounds"})
    EXPECT_NE(alerts.find("alert: " + std::string(alert)), std::string::npos) << alert;
  EXPECT_NE(alerts.find("> 0.8"), std::string::npos);
  EXPECT_NE(alerts.find("> 0.95"), std::string::npos);
  worker.signal(SIGTERM);
  EXPECT_EQ(worker.wait(15s), 0) << worker.err();
}

}  // namespace
}  // namespace agentcron
