// Database outages with the built binary: PostgreSQL restarted under a running worker, and a
// worker started while PostgreSQL is down. These stop the shared cluster, so ctest runs them alone.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>

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
                               << "[retry]\nbase_delay = \"200ms\"\nmax_delay = \"1s\"\n"
                               << "[log]\nformat = \"json\"\n[handlers.noop]\ntype = \"notify\"\n";
  }
  void TearDown() override {
    // Whatever happened, leave the cluster running for the tests after this one.
    std::system((testing::pg_ctl() + " status >/dev/null 2>&1 || " + testing::pg_ctl() + " start >/dev/null 2>&1").c_str());
    db.reconnect();
    ::unlink(config_path.c_str());
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
  pg_ctl("start");
  ASSERT_TRUE(eventually([&] { return succeeded() == 20; }, 60s)) << w.err();
  EXPECT_NE(w.err().find("database is reachable"), std::string::npos);
  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(15s), 0) << w.err();
}

}  // namespace
}  // namespace agentcron
