// The command line, end to end: the built binary, its output and exit codes.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <regex>
#include <set>

#include "support/process.hpp"
#include "support/test_db.hpp"

namespace agentcron {
namespace {

using testing::run_agentcron;
using testing::TestDatabase;

std::string temp_file(const std::string& name, const std::string& text) {
  std::string path = "/tmp/agentcron-e2e-" + std::to_string(::getpid()) + "-" + name;
  std::ofstream(path) << text;
  return path;
}

TEST(Cli, VersionAndHelp) {
  auto v = run_agentcron({"--version"});
  EXPECT_EQ(v.code, 0);
  EXPECT_EQ(v.out, "agentcron " AGENTCRON_VERSION "\n");
  auto h = run_agentcron({"--help"});
  EXPECT_EQ(h.code, 0);
  for (const char* cmd : {"run", "once", "migrate", "enqueue", "status", "cron next", "config check"})
    EXPECT_NE(h.out.find(cmd), std::string::npos) << cmd;
  for (std::vector<std::string> args : std::vector<std::vector<std::string>>{
           {"once", "--help"}, {"migrate", "--help"}, {"enqueue", "--help"}, {"status", "--help"}, {"cron", "next", "--help"}}) {
    auto r = run_agentcron(args);
    EXPECT_EQ(r.code, 0) << args[0] << r.err;
    EXPECT_NE(r.out.find("usage: agentcron " + args[0]), std::string::npos) << r.out;
  }
}

TEST(Cli, EveryCommandsHelpShowsAnExample) {
  auto top = run_agentcron({"--help"});
  for (const char* cmd : {"tasks", "kinds", "schedules", "doctor", "probe"})
    EXPECT_NE(top.out.find(std::string("  ") + cmd + " "), std::string::npos) << cmd;
  for (std::vector<std::string> args : std::vector<std::vector<std::string>>{
           {"run", "--help"}, {"once", "--help"}, {"migrate", "--help"}, {"enqueue", "--help"}, {"status", "--help"},
           {"cron", "next", "--help"}, {"config", "--help"}, {"config", "check", "--help"}, {"probe", "--help"},
           {"tasks", "--help"}, {"tasks", "list", "--help"}, {"tasks", "show", "--help"}, {"tasks", "purge", "--help"},
           {"kinds", "--help"}, {"schedules", "--help"}, {"doctor", "--help"}}) {
    auto r = run_agentcron(args);
    EXPECT_EQ(r.code, 0) << args[0] << " " << r.err;
    EXPECT_NE(r.out.find("example: agentcron "), std::string::npos) << args[0] << ": " << r.out;
  }
}

TEST(Cli, UsageErrorsExit64) {
  EXPECT_EQ(run_agentcron({"frobnicate"}).code, 64);
  EXPECT_EQ(run_agentcron({"enqueue"}).code, 64);
  EXPECT_EQ(run_agentcron({"--no-such-option"}).code, 64);
  auto r = run_agentcron({"enqueue", "--kind", "x", "--payload", "[1]"});
  EXPECT_EQ(r.code, 64);
  EXPECT_NE(r.err.find("--payload must be a JSON object"), std::string::npos) << r.err;
}

TEST(Cli, CronNextPrintsUtcFireTimes) {
  auto r = run_agentcron({"cron", "next", "30 2 * * *", "--from", "2026-03-07T12:00:00Z", "--count", "2", "--timezone",
                          "America/New_York"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "2026-03-08T07:00:00Z\n2026-03-09T06:30:00Z\n");
}

TEST(Cli, CronNextRejectsBadExpressionsAndZonesWith64) {
  auto r = run_agentcron({"cron", "next", "0 24 * * *"});
  EXPECT_EQ(r.code, 64);
  EXPECT_EQ(r.err, "agentcron: cron: field 2 (hour): 24 is out of range 0-23 in \"0 24 * * *\"\n");
  auto z = run_agentcron({"cron", "next", "* * * * *", "--timezone", "Mars/Base"});
  EXPECT_EQ(z.code, 64);
  EXPECT_NE(z.err.find("unknown time zone \"Mars/Base\""), std::string::npos);
}

TEST(Cli, ConfigCheckWithABrokenFileExits78WithFileAndLine) {
  std::string path = temp_file("broken.toml", "[database]\nconnection_limit = 4\n\n[scheduler]\nbatch_size = 0\n");
  auto r = run_agentcron({"--config", path, "config", "check"});
  EXPECT_EQ(r.code, 78);
  EXPECT_EQ(r.err, "agentcron: config error: " + path + ":5: scheduler.batch_size must be between 1 and 10000, got 0\n");
  ::unlink(path.c_str());
}

TEST(Cli, ConfigCheckOfThePrismaUrlShowsItsParametersAndNoPassword) {
  auto r = run_agentcron({"config", "check"},
                         {{"DATABASE_URL",
                           "postgresql://u:p%40ss@db.example:6543/postgres?pgbouncer=true&connection_limit=1&pool_"
                           "timeout=20&sslmode=require"}});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("connection_limit = 1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("pool_timeout = \"20s\""), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("pgbouncer = true"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("sslmode=require"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("# environment DATABASE_URL (url parameter)"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("p@ss"), std::string::npos);
  EXPECT_EQ(r.out.find("p%40ss"), std::string::npos);
  EXPECT_EQ(r.err.find("p@ss"), std::string::npos);
}

TEST(Cli, MigrateEnqueueAndStatusAgainstARealDatabase) {
  TestDatabase db(TestDatabase::Schema::empty);
  std::map<std::string, std::string> env{{"DATABASE_URL", db.url()}};
  // Before any migration, a command that reads our tables says what to do.
  auto early = run_agentcron({"status"}, env);
  EXPECT_EQ(early.code, 69) << early.err;
  EXPECT_NE(early.err.find("run `agentcron migrate`"), std::string::npos) << early.err;
  auto st = run_agentcron({"migrate", "--status"}, env);
  EXPECT_EQ(st.code, 0) << st.err;
  EXPECT_NE(st.out.find("0001_init"), std::string::npos);
  EXPECT_NE(st.out.find("pending"), std::string::npos);
  auto m1 = run_agentcron({"migrate"}, env);
  EXPECT_EQ(m1.code, 0) << m1.err;
  std::size_t files = 0;
  for (const auto& f : std::filesystem::directory_iterator(std::string(AGENTCRON_SOURCE_DIR) + "/migrations"))
    files += f.path().extension() == ".sql";
  EXPECT_EQ(m1.out, "applied " + std::to_string(files) + " migration(s)\n");
  auto m2 = run_agentcron({"migrate"}, env);
  EXPECT_EQ(m2.out, "schema is up to date\n");
  auto e = run_agentcron({"enqueue", "--kind", "mail", "--payload", "{\"to\":\"x\"}", "--priority", "3", "--agent", "a1"}, env);
  EXPECT_EQ(e.code, 0) << e.err;
  EXPECT_EQ(e.out, "enqueued task 1\n");
  auto c = run_agentcron({"enqueue", "--kind", "report", "--cron", "0 9 * * MON", "--timezone", "Europe/Berlin"}, env);
  EXPECT_EQ(c.code, 0) << c.err;
  EXPECT_EQ(db.scalar("SELECT count(*) FROM agentcron.agent_tasks WHERE cron = '0 9 * * MON' AND scheduled_for > now() "
                      "AND extract(isodow FROM scheduled_for AT TIME ZONE 'Europe/Berlin') = 1"),
            1);
  auto s = run_agentcron({"status"}, env);
  EXPECT_EQ(s.code, 0) << s.err;
  EXPECT_NE(s.out.find("pending    2"), std::string::npos) << s.out;
  EXPECT_NE(s.out.find("due now    1"), std::string::npos) << s.out;
}

TEST(Cli, UnreachableDatabaseExits69WithoutThePassword) {
  auto r = run_agentcron({"status", "--set", "database.connect_timeout=2s"},
                         {{"DATABASE_URL", "postgresql://u:hunter2@127.0.0.1:1/db"}});
  EXPECT_EQ(r.code, 69);
  EXPECT_NE(r.err.find("database error"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("hunter2"), std::string::npos) << r.err;
}

// Twenty `enqueue --dedup-key K` at once: one inserts, every other one reports that task — none
// fails because the winner committed between its snapshot and its insert.
TEST(Cli, ConcurrentEnqueuesWithOneDedupKeyAllReportTheOneLiveTask) {
  testing::TestDatabase db;
  std::vector<std::unique_ptr<testing::Process>> procs;
  for (int i = 0; i < 20; ++i)
    procs.push_back(std::make_unique<testing::Process>(std::vector<std::string>{
        "--database-url", db.url(), "--log-level", "warn", "enqueue", "--kind", "noop", "--dedup-key", "K"}));
  std::set<std::string> ids;
  int inserted = 0;
  for (auto& p : procs) {
    auto code = p->wait(std::chrono::seconds(60));
    ASSERT_TRUE(code);
    EXPECT_EQ(*code, 0) << p->err();
    std::smatch m;
    std::string out = p->out();
    ASSERT_TRUE(std::regex_search(out, m, std::regex("task ([0-9]+)"))) << out << p->err();
    ids.insert(m[1]);
    if (out.rfind("enqueued task", 0) == 0) ++inserted;
  }
  EXPECT_EQ(ids.size(), 1u);
  EXPECT_EQ(inserted, 1);
  EXPECT_EQ(db.scalar("SELECT count(*) FROM agentcron.agent_tasks WHERE dedup_key = 'K'"), 1);
}

}  // namespace
}  // namespace agentcron
