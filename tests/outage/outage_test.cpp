// Database outages with the built binary: PostgreSQL restarted under a running worker, and a
// worker started while PostgreSQL is down. These stop the shared cluster, so ctest runs them alone.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <httplib.h>

#include <cstdlib>
#include <fstream>
#include <regex>

#include "support/process.hpp"
#include "support/test_db.hpp"

namespace agentcron {
namespace {

using namespace std::chrono_literals;
using testing::eventually;
using testing::Process;
using testing::TestDatabase;

void pg_ctl(const std::string& action) {
  std::string cmd = testing::pg_ctl() + " " + action + " >/dev/null 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
}

class OutageTest : public ::testing::Test {
 protected:
  TestDatabase db;
  std::string config_path = "/tmp/agentcron-outage-" + std::to_string(::getpid()) + ".toml";

  void SetUp() override {
    // The password is ignored by the trust-auth cluster, and must never be printed.
    std::string url = db.url();
    url.replace(url.find("@"), 1, ":hunter2@");
    std::ofstream(config_path) << "[database]\nurl = \"" << url << "\"\nconnect_timeout = \"2s\"\n"
                               << "[scheduler]\nschedule = \"@every 200ms\"\n"
                               << "[retry]\nbase_delay = \"200ms\"\nmax_delay = \"1s\"\nbreaker_cooldown = \"2s\"\n"
                               << "[metrics]\nlisten = \"127.0.0.1:0\"\n"
                               << "[log]\nformat = \"json\"\n[handlers.noop]\ntype = \"notify\"\n";
  }
  void TearDown() override {
    // Whatever happened, leave the cluster running for the tests after this one.
    std::system((testing::pg_ctl() + " status >/dev/null 2>&1 || " + testing::pg_ctl() + " start >/dev/null 2>&1").c_str());
    db.reconnect();
    ::unlink(config_path.c_str());
  }
  // The port the worker's /metrics took (it logs where it listens).
  static int metrics_port(Process& w) {
    if (!w.wait_for_log("serving /metrics", 30s)) return 0;
    std::smatch m;
    std::string err = w.err();
    return std::regex_search(err, m, std::regex(R"re("listen":"127\.0\.0\.1:([0-9]+)")re")) ? std::stoi(m[1]) : 0;
  }
  // The status of GET `path` (-1: no answer) and its body.
  static std::pair<int, std::string> get(int port, const char* path) {
    auto r = httplib::Client("127.0.0.1", port).Get(path);
    return r ? std::pair{r->status, r->body} : std::pair{-1, std::string()};
  }
  std::int64_t succeeded() {
    try {
      return db.scalar("SELECT count(*) FROM agentcron.agent_tasks WHERE status = 'succeeded'");
    } catch (const pqxx::broken_connection&) {
      db.reconnect();
      return -1;
    }
  }
};

TEST_F(OutageTest, WorkerSurvivesAPostgresRestartAndFinishesEveryTask) {
  Process w({"--config", config_path, "run"});
  db.insert_due(100);
  ASSERT_TRUE(eventually([&] { return succeeded() == 100; }, 30s)) << w.err();
  pg_ctl("-m fast restart");
  db.reconnect();
  db.insert_due(100);
  ASSERT_TRUE(eventually([&] { return succeeded() == 200; }, 60s)) << w.err();
  EXPECT_TRUE(w.running());
  std::string err = w.err();
  // The outage was noticed and logged (a lost LISTEN connection, a failed claim, or both).
  EXPECT_TRUE(err.find("LISTEN connection lost") != std::string::npos ||
              err.find("claiming due tasks failed") != std::string::npos)
      << err;
  EXPECT_EQ(err.find("hunter2"), std::string::npos);
  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(15s), 0) << w.err();
}

TEST_F(OutageTest, ReadinessFollowsTheDatabaseWhileHealthStaysUp) {
  Process w({"--config", config_path, "run"});
  int port = metrics_port(w);
  ASSERT_GT(port, 0) << w.err();
  ASSERT_TRUE(eventually([&] { return get(port, "/readyz").first == 200; }, 30s)) << w.err();
  pg_ctl("-m fast stop");
  ASSERT_TRUE(eventually([&] { return get(port, "/readyz").first == 503; }, 60s)) << w.err();
  EXPECT_NE(get(port, "/readyz").second.find("database"), std::string::npos) << get(port, "/readyz").second;
  EXPECT_EQ(get(port, "/healthz").first, 200);
  pg_ctl("start");
  db.reconnect();
  ASSERT_TRUE(eventually([&] { return get(port, "/readyz").first == 200; }, 60s)) << get(port, "/readyz").second << w.err();
  db.insert_due(10);
  ASSERT_TRUE(eventually([&] { return succeeded() == 10; }, 30s)) << w.err();
  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(15s), 0) << w.err();
}

TEST_F(OutageTest, WorkerStartedWhileTheDatabaseIsDownWaitsAndStartsWhenItComesUp) {
  db.insert_due(20);
  db.reconnect();
  pg_ctl("-m fast stop");
  Process w({"--config", config_path, "run"});
  // One log line per attempt, with backoff, the password redacted.
  ASSERT_TRUE(eventually([&] {
    std::string e = w.err();
    std::size_t n = 0;
    for (auto p = e.find("\"database unavailable\""); p != std::string::npos; p = e.find("\"database unavailable\"", p + 1)) ++n;
    return n >= 3;
  }, 30s)) << w.err();
  EXPECT_TRUE(w.running());
  std::string err = w.err();
  EXPECT_EQ(err.find("hunter2"), std::string::npos) << err;
  EXPECT_NE(err.find("password=***"), std::string::npos) << err;
  // Alive, not ready, and saying why.
  int port = metrics_port(w);
  ASSERT_GT(port, 0) << w.err();
  EXPECT_EQ(get(port, "/healthz").first, 200);
  EXPECT_EQ(get(port, "/readyz"), (std::pair<int, std::string>{503, "starting: waiting for the database\n"}));
  pg_ctl("start");
  ASSERT_TRUE(eventually([&] { return succeeded() == 20; }, 60s)) << w.err();
  EXPECT_NE(w.err().find("database is reachable"), std::string::npos);
  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(15s), 0) << w.err();
}

}  // namespace
}  // namespace agentcron
