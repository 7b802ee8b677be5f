// `agentcron doctor` against a throwaway cluster set up to trip each of its checks: a nearly
// exhausted connection limit, a PgBouncer in front, a read-only database, a server that ends idle
// sessions, due kinds no handler takes, leases long expired, dead rows and an invalid index.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <pqxx/pqxx>

#include "support/bouncer.hpp"
#include "support/process.hpp"
#include "support/test_db.hpp"

namespace agentcron {
namespace {

using namespace std::chrono_literals;
using testing::run_agentcron;
using testing::RunResult;
using testing::TestDatabase;

class DoctorE2E : public ::testing::Test {
 protected:
  TestDatabase db;
  std::string config_path = "/tmp/agentcron-e2e-doctor-" + std::to_string(::getpid()) + "-" +
                            ::testing::UnitTest::GetInstance()->current_test_info()->name() + ".toml";
  void TearDown() override { ::unlink(config_path.c_str()); }
  // `doctor` as a worker with `handlers` (the kind "noop") would see `url`.
  std::string handlers = "[handlers.noop]\ntype = \"notify\"\n";
  RunResult doctor(const std::string& url, std::vector<std::string> extra = {}) {
    std::ofstream(config_path) << handlers;
    std::vector<std::string> args{"--config", config_path, "--database-url", url, "doctor"};
    args.insert(args.end(), extra.begin(), extra.end());
    return run_agentcron(args);
  }
  RunResult doctor() { return doctor(db.url()); }
  // The line of one check ("[warn] kinds: …"), "" when absent.
  static std::string line_of(const RunResult& r, const std::string& check) {
    for (const char* v : {"[ok] ", "[warn] ", "[fail] "}) {
      auto at = r.out.find(std::string(v) + check + ": ");
      if (at != std::string::npos) return r.out.substr(at, r.out.find('\n', at) - at);
    }
    return "";
  }
};

TEST_F(DoctorE2E, AHealthyDatabaseIsAllOkInTextAndJson) {
  // A running worker is seen, with the connections its pool holds (its LISTEN one at least).
  std::string worker_config = config_path + ".worker.toml";
  std::ofstream(worker_config) << "[database]\nurl = \"" << db.url() << "\"\n[metrics]\nlisten = \"\"\n"
                               << "[handlers.noop]\ntype = \"notify\"\n";
  testing::Process worker({"--config", worker_config, "run"});
  ASSERT_TRUE(testing::eventually([&] {
    return db.scalar("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN %' AND datname = current_database()") == 1;
  })) << worker.err();
  auto r = doctor();
  EXPECT_NE(line_of(r, "connections").find("1 agentcron worker(s) connected ("), std::string::npos) << r.out;
  worker.signal(SIGTERM);
  EXPECT_EQ(worker.wait(std::chrono::seconds(15)), 0) << worker.err();
  ::unlink(worker_config.c_str());
  EXPECT_EQ(r.code, 0) << r.out << r.err;
  for (const char* check : {"schema", "connections", "pooler", "server timeouts", "writable", "clock", "tasks table",
                            "kinds", "leases"})
    EXPECT_EQ(line_of(r, check).rfind("[ok] ", 0), 0u) << check << "\n" << r.out;
  EXPECT_NE(line_of(r, "clock").find(" s from the database's"), std::string::npos) << r.out;
  auto json = run_agentcron({"--database-url", db.url(), "doctor", "--format", "json"});
  EXPECT_EQ(json.code, 0) << json.err;
  EXPECT_EQ(json.out.front(), '[');
  EXPECT_NE(json.out.find("\"verdict\": \"ok\""), std::string::npos) << json.out;
  EXPECT_EQ(json.out.find("\"verdict\": \"fail\""), std::string::npos) << json.out;
  EXPECT_EQ(run_agentcron({"doctor", "--help"}).code, 0);
}

TEST_F(DoctorE2E, ANearlyExhaustedConnectionLimitIsRedAndSaysWhatToChange) {
  // A role of its own (superusers are exempt from connection limits) with room for six.
  std::string role = "doctor_" + std::to_string(::getpid());
  db.exec("DROP ROLE IF EXISTS " + role);
  db.exec("CREATE ROLE " + role + " LOGIN CONNECTION LIMIT 6");
  db.exec("GRANT USAGE ON SCHEMA agentcron TO " + role);
  db.exec("GRANT SELECT ON ALL TABLES IN SCHEMA agentcron TO " + role);
  std::string conninfo = db.conninfo() + " user=" + role;
  std::string url = "postgresql://" + role + "@127.0.0.1:" + std::to_string(db.port()) + "/" + db.name();
  {
    // Five connections of an application that holds its pool open.
    std::vector<std::unique_ptr<pqxx::connection>> app;
    for (int i = 0; i < 5; ++i) app.push_back(std::make_unique<pqxx::connection>(conninfo + " application_name=billing-api"));
    auto r = doctor(url);
    EXPECT_EQ(r.code, 1) << r.out << r.err;
    std::string line = line_of(r, "connections");
    EXPECT_EQ(line.rfind("[fail] connections: 6 of 6 connections in use (100 %, the role's CONNECTION LIMIT)", 0), 0u) << r.out;
    EXPECT_NE(line.find("billing-api 5"), std::string::npos) << line;
    EXPECT_NE(r.out.find("lower database.connection_limit"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("raise the role's CONNECTION LIMIT"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("put PgBouncer in transaction mode in front"), std::string::npos) << r.out;
  }
  db.exec("ALTER ROLE " + role + " CONNECTION LIMIT 100");
  auto ok = doctor(url);
  EXPECT_EQ(line_of(ok, "connections").rfind("[ok] ", 0), 0u) << ok.out << ok.err;
  db.exec("DROP OWNED BY " + role);
  db.exec("DROP ROLE " + role);
}

TEST_F(DoctorE2E, APgbouncerInFrontWithoutPgbouncerModeIsReported) {
  testing::Bouncer bouncer(db);
  ASSERT_TRUE(bouncer.ready()) << bouncer.log();
  auto r = doctor(bouncer.url());
  EXPECT_EQ(r.code, 0) << r.out << r.err;  // on a port of its own it may be a plain proxy: a warning
  std::string line = line_of(r, "pooler");
  EXPECT_EQ(line.rfind("[warn] pooler: something sits between agentcron and PostgreSQL: it connects to port ", 0), 0u) << r.out;
  EXPECT_NE(r.out.find("set database.pgbouncer = true"), std::string::npos) << r.out;
  auto fixed = doctor(bouncer.url() + "?pgbouncer=true");
  EXPECT_EQ(line_of(fixed, "pooler").rfind("[ok] ", 0), 0u) << fixed.out << fixed.err;
  // Directly connected, pgbouncer mode is needless (LISTEN off).
  EXPECT_EQ(line_of(doctor(db.url() + "?pgbouncer=true"), "pooler").rfind("[warn] ", 0), 0u);
}

TEST_F(DoctorE2E, AReadOnlyDatabaseIsRedAndIdleSessionKillsAreAWarning) {
  db.exec("ALTER DATABASE " + db.name() + " SET idle_session_timeout = '1min'");
  db.exec("ALTER DATABASE " + db.name() + " SET default_transaction_read_only = on");
  auto r = doctor();
  EXPECT_EQ(r.code, 1) << r.out << r.err;
  EXPECT_EQ(line_of(r, "writable").rfind("[fail] writable: default_transaction_read_only is on", 0), 0u) << r.out;
  EXPECT_EQ(line_of(r, "server timeouts").rfind("[warn] ", 0), 0u) << r.out;
  EXPECT_NE(r.out.find("the server ends sessions idle for 1m, shorter than database.max_lifetime (30m)"), std::string::npos)
      << r.out;
  db.exec("ALTER DATABASE " + db.name() + " RESET default_transaction_read_only");
  db.exec("ALTER DATABASE " + db.name() + " RESET idle_session_timeout");
}

// A claim probes the due index once for each kind it takes: a worker of more than kManyKinds (32)
// pays milliseconds a claim, and both `doctor` and the worker itself (`once` here) say so.
TEST_F(DoctorE2E, AWorkerOfMoreThan32KindsIsAWarning) {
  auto kinds = [](int n) {
    std::string s;
    for (int i = 0; i < n; ++i) s += "[handlers.k" + std::to_string(i) + "]\ntype = \"notify\"\n";
    return s;
  };
  handlers = kinds(32);
  auto r = doctor();
  EXPECT_EQ(line_of(r, "kinds").rfind("[ok] kinds: this configuration handles 32 kind(s)", 0), 0u) << r.out;
  auto once = run_agentcron({"--config", config_path, "--database-url", db.url(), "once"});
  EXPECT_EQ(once.code, 0) << once.err;
  EXPECT_EQ(once.err.find("many kinds"), std::string::npos) << once.err;

  handlers = kinds(33);
  r = doctor();
  EXPECT_EQ(r.code, 0) << r.out;  // a warning, not a failure
  EXPECT_EQ(line_of(r, "kinds").rfind("[warn] kinds: this configuration handles 33 kind(s)", 0), 0u) << r.out;
  EXPECT_NE(line_of(r, "kinds").find("more than 32 kinds in this configuration"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("split the kinds across workers' configurations"), std::string::npos) << r.out;
  once = run_agentcron({"--config", config_path, "--database-url", db.url(), "once"});
  EXPECT_EQ(once.code, 0) << once.err;
  EXPECT_NE(once.err.find("this worker claims many kinds; every claim probes the due index"), std::string::npos)
      << once.err;
}

TEST_F(DoctorE2E, UnhandledKindsExpiredLeasesDeadRowsAndAnInvalidIndexAreReported) {
  db.exec("INSERT INTO agentcron.agent_tasks (kind, scheduled_for) SELECT 'orphan', now() - interval '10 minutes' "
          "FROM generate_series(1, 3)");
  db.exec("INSERT INTO agentcron.agent_tasks (kind, scheduled_for) VALUES ('held', now() - interval '10 minutes')");
  db.exec("INSERT INTO agentcron.agent_tasks (kind, scheduled_for) VALUES (E'evil\\x1b]0;x\\x07', now() - interval '5 minutes')");
  db.exec("INSERT INTO agentcron.paused_kinds (kind) VALUES ('held')");
  db.exec("INSERT INTO agentcron.agent_tasks (kind, status, locked_by, locked_until, attempts) "
          "VALUES ('noop', 'running', 'gone:1:deadbeef', now() - interval '10 minutes', 1)");
  db.exec("CREATE INDEX agent_tasks_extra_idx ON agentcron.agent_tasks (created_at)");
  db.exec("UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'agentcron.agent_tasks_extra_idx'::regclass");
  db.exec("ALTER TABLE agentcron.agent_tasks SET (autovacuum_enabled = false)");
  db.exec("INSERT INTO agentcron.agent_tasks (kind, status, finished_at) SELECT 'noop', 'succeeded', now() "
          "FROM generate_series(1, 30000)");
  db.exec("DELETE FROM agentcron.agent_tasks WHERE status = 'succeeded'");
  db.exec("SELECT pg_stat_force_next_flush()");
  RunResult r;
  ASSERT_TRUE(testing::eventually([&] {
    r = doctor();
    return line_of(r, "tasks table").find("30000 dead") != std::string::npos;
  }, 10s)) << r.out;
  EXPECT_EQ(r.code, 1) << r.out;
  std::string kinds = line_of(r, "kinds");
  EXPECT_EQ(kinds.rfind("[warn] kinds: ", 0), 0u) << r.out;
  EXPECT_NE(kinds.find("no handler here: orphan (3 due, oldest 10m"), std::string::npos) << kinds;
  EXPECT_NE(kinds.find("paused: held (1 due"), std::string::npos) << kinds;
  EXPECT_NE(kinds.find("evil\\x1b]0;x\\x07 (1 due"), std::string::npos) << kinds;  // written out
  EXPECT_EQ(r.out.find('\x1b'), std::string::npos) << "an escape sequence reached the terminal";
  EXPECT_NE(r.out.find("agentcron kinds resume KIND"), std::string::npos);
  EXPECT_EQ(line_of(r, "leases").rfind("[warn] leases: 1 running task(s) past their lease", 0), 0u) << r.out;
  EXPECT_EQ(line_of(r, "tasks table").rfind("[fail] tasks table: ", 0), 0u) << r.out;
  EXPECT_NE(r.out.find("invalid index(es) [\"agent_tasks_extra_idx\"]"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("autovacuum is behind"), std::string::npos) << r.out;
  auto json = run_agentcron({"--database-url", db.url(), "doctor", "--format", "json"});
  EXPECT_EQ(json.code, 1);
  EXPECT_NE(json.out.find("\"check\": \"leases\""), std::string::npos) << json.out;
  EXPECT_EQ(json.out.find('\x1b'), std::string::npos) << json.out;
}

}  // namespace
}  // namespace agentcron
