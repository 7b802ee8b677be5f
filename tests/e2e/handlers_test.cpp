// The http and exec handlers inside the built worker: results recorded, and under SIGTERM the
// in-flight requests and processes stopped after the grace with their tasks back to pending.
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "support/process.hpp"
#include "support/raw_server.hpp"
#include "support/test_db.hpp"

namespace agentcron {
namespace {

using namespace std::chrono_literals;
using testing::eventually;
using testing::Process;
using testing::RawServer;
using testing::TestDatabase;

class HandlersE2E : public ::testing::Test {
 protected:
  TestDatabase db;
  std::string config_path = "/tmp/agentcron-e2e-handlers-" + std::to_string(::getpid()) + "-" +
                            ::testing::UnitTest::GetInstance()->current_test_info()->name() + ".toml";
  void TearDown() override { ::unlink(config_path.c_str()); }
  std::int64_t count(const std::string& where) {
    return db.scalar("SELECT count(*) FROM agentcron.agent_tasks WHERE " + where);
  }
};

TEST_F(HandlersE2E, HttpSuccessKeepsTheJsonBodyAndTheTokenComesFromTheEnvironment) {
  httplib::Server server;
  std::string seen_auth;
  server.Post("/run", [&](const httplib::Request& req, httplib::Response& res) {
    seen_auth = req.get_header_value("Authorization");
    res.set_content("{\"run\":\"r-" + req.get_header_value("Idempotency-Key") + "\"}", "application/json");
  });
  int port = server.bind_to_any_port("127.0.0.1");
  std::thread t([&] { server.listen_after_bind(); });
  std::ofstream(config_path) << "[database]\nurl = \"" << db.url() << "\"\n[scheduler]\nschedule = \"@every 200ms\"\n"
                             << "[handlers.call_agent]\ntype = \"http\"\nurl = \"http://127.0.0.1:" << port << "/run\"\n"
                             << "headers = { Authorization = \"Bearer ${AGENT_TOKEN}\" }\n";
  db.exec("INSERT INTO agentcron.agent_tasks (kind, payload) VALUES ('call_agent', '{\"q\":1}')");
  Process w({"--config", config_path, "run"}, {{"AGENT_TOKEN", "tok-123"}});
  bool done = eventually([&] { return count("status = 'succeeded'") == 1; }, 20s);
  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(10s), 0);
  server.stop();
  t.join();
  ASSERT_TRUE(done) << w.err();
  EXPECT_EQ(seen_auth, "Bearer tok-123");
  EXPECT_EQ(count("result = '{\"run\":\"r-agentcron-1-1\"}'"), 1);
  EXPECT_EQ(w.err().find("tok-123"), std::string::npos);
}

TEST_F(HandlersE2E, MissingHeaderVariableIsAConfigError) {
  std::ofstream(config_path) << "[database]\nurl = \"" << db.url() << "\"\n"
                             << "[handlers.call_agent]\ntype = \"http\"\nurl = \"http://127.0.0.1:9/run\"\n"
                             << "headers = { Authorization = \"Bearer ${AGENTCRON_E2E_NOT_SET}\" }\n";
  auto r = testing::run_agentcron({"--config", config_path, "config", "check"});
  EXPECT_EQ(r.code, 78);
  EXPECT_EQ(r.err, "agentcron: config error: " + config_path +
                       ":3: handlers.call_agent.headers.Authorization: environment variable AGENTCRON_E2E_NOT_SET is not set\n");
}

TEST_F(HandlersE2E, SigtermStopsInFlightRequestsAndProcessesAfterTheGraceAndReleasesTheirTasks) {
  RawServer silent(RawServer::Mode::never_answer);
  std::ofstream(config_path) << "[database]\nurl = \"" << db.url() << "\"\n"
                             << "[scheduler]\nschedule = \"@every 200ms\"\nconcurrency = 8\n"
                             << "[shutdown]\ngrace = \"1s\"\n"
                             << "[handlers.call_agent]\ntype = \"http\"\ntimeout = \"5m\"\nurl = \"http://127.0.0.1:"
                             << silent.port() << "/run\"\n"
                             << "[handlers.script]\ntype = \"exec\"\ncommand = [\"/bin/sh\", \"-c\", \"trap '' TERM; sleep 313\"]\n"
                             << "kill_after = \"1s\"\ntimeout = \"5m\"\n";
  db.exec("INSERT INTO agentcron.agent_tasks (kind) SELECT k FROM unnest(ARRAY['call_agent','call_agent','script','script']) k");
  Process w({"--config", config_path, "run"});
  ASSERT_TRUE(eventually([&] { return count("status = 'running'") == 4 && silent.accepted() == 2; }, 20s)) << w.err();
  // (The [3] keeps pgrep from matching the command line of the shell that runs it.)
  ASSERT_TRUE(eventually([&] { return std::system("pgrep -f 'sleep 31[3]' >/dev/null") == 0; }, 10s));
  w.signal(SIGTERM);
  auto start = std::chrono::steady_clock::now();
  auto code = w.wait(15s);
  ASSERT_TRUE(code) << w.err();
  EXPECT_EQ(*code, 0) << w.err();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s + 1s + 2s);  // grace + kill_after + margin
  EXPECT_EQ(count("status = 'pending' AND attempts = 0"), 4);
  EXPECT_EQ(count("status = 'running'"), 0);
  // The scripts ignored SIGTERM; they were SIGKILLed with their process group.
  EXPECT_TRUE(eventually([&] { return std::system("pgrep -f 'sleep 31[3]' >/dev/null") != 0; }, 5s));
}

// An endpoint that honours Idempotency-Key replays the first reply of a key. A recurring task
// once sent the same key at every fire; now each occurrence has its own, and the retry of an
// occurrence is told apart by its attempt.
TEST_F(HandlersE2E, EachOccurrenceOfARecurringTaskSendsItsOwnIdempotencyKey) {
  httplib::Server server;
  std::mutex mu;
  std::vector<std::string> keys;
  server.Post("/run", [&](const httplib::Request& req, httplib::Response& res) {
    std::string key = req.get_header_value("Idempotency-Key");
    std::lock_guard lock(mu);
    bool seen = std::find(keys.begin(), keys.end(), key) != keys.end();
    keys.push_back(key);
    // A key seen before gets the stored reply; a first attempt gets a 503 (so it is retried).
    res.status = seen ? 200 : key.ends_with("-1") ? 503 : 200;
    res.set_content(seen ? "{\"replayed\":true}" : "{}", "application/json");
  });
  int port = server.bind_to_any_port("127.0.0.1");
  std::thread t([&] { server.listen_after_bind(); });
  std::ofstream(config_path) << "[database]\nurl = \"" << db.url() << "\"\n[scheduler]\nschedule = \"@every 100ms\"\n"
                             << "[retry]\nbase_delay = \"100ms\"\n[metrics]\nlisten = \"\"\n"
                             << "[handlers.nightly]\ntype = \"http\"\nurl = \"http://127.0.0.1:" << port << "/run\"\n";
  db.exec("INSERT INTO agentcron.agent_tasks (kind, cron) VALUES ('nightly', '* * * * * *')");
  Process w({"--config", config_path, "run"});
  bool three = eventually([&] { return db.scalar("SELECT count(*) FROM agentcron.task_runs WHERE outcome = 'succeeded'") >= 3; }, 20s);
  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(10s), 0) << w.err();
  server.stop();
  t.join();
  ASSERT_TRUE(three) << w.err();
  std::lock_guard lock(mu);
  std::set<std::string> distinct(keys.begin(), keys.end());
  EXPECT_EQ(distinct.size(), keys.size()) << "a key was sent twice";
  // agentcron-<id>-<occurrence>-<attempt>: attempts 1 and 2 of each occurrence share its time.
  std::map<std::string, std::set<std::string>> attempts_by_occurrence;
  for (const auto& k : keys) {
    ASSERT_EQ(k.rfind("agentcron-1-", 0), 0u) << k;
    auto dash = k.rfind('-');
    attempts_by_occurrence[k.substr(0, dash)].insert(k.substr(dash + 1));
  }
  EXPECT_GE(attempts_by_occurrence.size(), 3u);
  for (const auto& [occurrence, attempts] : attempts_by_occurrence)
    if (attempts.size() == 2) {
      EXPECT_EQ(attempts, (std::set<std::string>{"1", "2"})) << occurrence;
    }
  EXPECT_EQ(db.scalar("SELECT count(*) FROM agentcron.agent_tasks WHERE result::text LIKE '%replayed%'"), 0);
}

// The hostile-input issue's reproduction: a script that prints its environment once put the
// worker's DATABASE_URL, password included, into last_error. Here the URL's password is
// p/ss?w#rd, unencoded; the script's output shows neither it nor a token of the worker's.
TEST_F(HandlersE2E, AScriptPrintingItsEnvironmentLeaksNoSecret) {
  std::string url = "postgresql://agentcron:p/ss?w#rd@127.0.0.1:" + std::to_string(db.port()) + "/" + db.name();
  std::ofstream(config_path) << "[scheduler]\nschedule = \"@every 200ms\"\n[metrics]\nlisten = \"\"\n"
                             << "[handlers.dump]\ntype = \"exec\"\ncommand = [\"/bin/sh\", \"-c\", \"env; exit 65\"]\n"
                             << "inherit_env = [\"SHOWN_*\"]\n";
  db.exec("INSERT INTO agentcron.agent_tasks (kind) VALUES ('dump')");
  Process w({"--config", config_path, "--log-format", "json", "run"},
            {{"DATABASE_URL", url}, {"STRIPE_KEY", "sk_live_SECRET"}, {"SHOWN_REGION", "eu-1"}});
  bool failed = eventually([&] { return count("status = 'failed'") == 1; }, 20s);
  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(10s), 0) << w.err();
  ASSERT_TRUE(failed) << w.err();
  std::string error = db.text("SELECT last_error FROM agentcron.agent_tasks");
  EXPECT_EQ(error.rfind("exit 65 (data error: not retried): ", 0), 0u) << error;
  EXPECT_NE(error.find("SHOWN_REGION=eu-1"), std::string::npos) << error;
  EXPECT_NE(error.find("AGENTCRON_TASK_ID=1"), std::string::npos) << error;
  for (const std::string secret : {"p/ss?w#rd", "p%2Fss", "DATABASE_URL", "sk_live_SECRET", "STRIPE_KEY"}) {
    EXPECT_EQ(error.find(secret), std::string::npos) << secret << " in last_error:\n" << error;
    EXPECT_EQ(w.err().find(secret == "DATABASE_URL" ? "p/ss" : secret), std::string::npos) << secret << " logged";
  }
}

// The reproduction of the faults issue: an agent printing bytes that are not UTF-8 and a few KiB
// of Japanese once killed the worker (pqxx::argument_error, exit 134), and the next worker that
// claimed the task died the same way. Now the task fails with readable text, the worker runs on.
TEST_F(HandlersE2E, AnAgentPrintingInvalidUtf8FailsItsTaskAndTheWorkerKeepsRunning) {
  std::ofstream(config_path) << "[database]\nurl = \"" << db.url() << "\"\n[scheduler]\nschedule = \"@every 200ms\"\n"
                             << "[log]\nformat = \"json\"\n"
                             << "[handlers.agent]\ntype = \"exec\"\ncommand = [\"/bin/sh\", \"-c\", "
                             << "\"printf '\\\\377\\\\376 bad'; i=0; while [ $i -lt 2000 ]; do printf '\\\\346\\\\227\\\\245'; "
                             << "i=$((i+1)); done; exit 1\"]\n"
                             << "[handlers.ok]\ntype = \"notify\"\n";
  db.exec("INSERT INTO agentcron.agent_tasks (kind, max_attempts) VALUES ('agent', 1)");
  Process w({"--config", config_path, "run"});
  bool failed = eventually([&] { return count("kind = 'agent' AND status = 'failed'") == 1; }, 20s);
  db.insert_due(5, "ok");  // inserted after the bad reply: the same worker still serves them
  bool after = eventually([&] { return count("kind = 'ok' AND status = 'succeeded'") == 5; }, 20s);
  EXPECT_TRUE(w.running());
  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(10s), 0) << w.err();
  ASSERT_TRUE(failed) << w.err();
  EXPECT_TRUE(after) << w.err();
  std::string error = db.text("SELECT last_error FROM agentcron.agent_tasks WHERE kind = 'agent'");
  EXPECT_EQ(error.rfind("exit 1: ", 0), 0u) << error.substr(0, 60);
  EXPECT_EQ(error.substr(error.size() - 6), "\xE6\x97\xA5\xE6\x97\xA5");
  EXPECT_EQ(error.find("terminate called"), std::string::npos);
}

}  // namespace
}  // namespace agentcron
