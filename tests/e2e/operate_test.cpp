// Operating agentcron, end to end: the task admin commands, the SQL API applications call,
// per-kind concurrency and fleet-wide pauses, and named schedules on a three-process fleet —
// the built binary against a real PostgreSQL, with real signals.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <pqxx/pqxx>
#include <regex>

#include "support/process.hpp"
#include "support/test_db.hpp"

namespace agentcron {
namespace {

using namespace std::chrono_literals;
using testing::eventually;
using testing::Process;
using testing::run_agentcron;
using testing::RunResult;
using testing::TestDatabase;

const char* kSleepCommand = R"cmd(["/bin/sh", "-c", "sleep $(tr -dc 0-9.)"])cmd";

class OperateE2E : public ::testing::Test {
 protected:
  TestDatabase db;
  std::string config_path = "/tmp/agentcron-e2e-operate-" + std::to_string(::getpid()) + "-" +
                            ::testing::UnitTest::GetInstance()->current_test_info()->name() + ".toml";

  void TearDown() override { ::unlink(config_path.c_str()); }

  void write_config(const std::string& scheduler, const std::string& extra) {
    std::ofstream(config_path) << "[database]\nurl = \"" << db.url() << "\"\n"
                               << "connection_limit = 4\npool_timeout = \"5s\"\nconnect_timeout = \"2s\"\n"
                               << "[scheduler]\n" << scheduler << "\n"
                               << "[metrics]\nlisten = \"\"\n[log]\nformat = \"json\"\n" << extra;
  }
  RunResult cli(std::vector<std::string> args) {
    args.insert(args.begin(), {"--database-url", db.url()});
    return run_agentcron(args);
  }
  std::int64_t count(const std::string& where) {
    return db.scalar("SELECT count(*) FROM agentcron.agent_tasks WHERE " + where);
  }
  std::int64_t insert(const std::string& columns, const std::string& values) {
    return db.scalar("INSERT INTO agentcron.agent_tasks (" + columns + ") VALUES (" + values + ") RETURNING id");
  }
  // The SQLSTATE a statement fails with ("" when it succeeds).
  std::string sqlstate_of(const std::string& query) {
    try {
      db.exec(query);
    } catch (const pqxx::sql_error& e) {
      return e.sqlstate();
    }
    return "";
  }
};

TEST_F(OperateE2E, TasksCommandsListShowCancelRetryApproveRejectAndPurgeWithClearErrors) {
  auto pending = insert("kind, payload", "'mail', '{\"to\":\"a\"}'");
  auto failed = insert("kind, status, finished_at, last_error, attempts", "'report', 'failed', now(), 'boom', 5");
  auto waiting = insert("kind, approval", "'deploy', 'pending'");
  auto unwanted = insert("kind, approval", "'deploy', 'pending'");
  auto done = insert("kind, status, finished_at", "'mail', 'succeeded', now() - interval '3 days'");
  db.exec("INSERT INTO agentcron.agent_tasks (kind, status, finished_at) SELECT 'mail', 'succeeded', "
          "now() - interval '2 days' FROM generate_series(1, 4)");
  db.exec("INSERT INTO agentcron.task_runs (task_id, attempt, outcome, error) VALUES (" + std::to_string(failed) +
          ", 5, 'failed', 'boom')");

  auto list = cli({"tasks", "list", "--status", "failed", "--format", "json"});
  ASSERT_EQ(list.code, 0) << list.err;
  EXPECT_NE(list.out.find("\"id\":" + std::to_string(failed)), std::string::npos) << list.out;
  EXPECT_EQ(list.out.find("\"id\":" + std::to_string(pending) + ","), std::string::npos) << list.out;
  auto table = cli({"tasks", "list", "--kind", "deploy"});
  ASSERT_EQ(table.code, 0) << table.err;
  EXPECT_NE(table.out.find("approval"), std::string::npos) << table.out;
  EXPECT_EQ(std::count(table.out.begin(), table.out.end(), '\n'), 3) << table.out;  // header + 2 tasks

  auto show = cli({"tasks", "show", std::to_string(failed)});
  ASSERT_EQ(show.code, 0) << show.err;
  EXPECT_NE(show.out.find("last_error:"), std::string::npos) << show.out;
  EXPECT_NE(show.out.find("boom"), std::string::npos) << show.out;
  EXPECT_NE(show.out.find("runs (newest first)"), std::string::npos) << show.out;
  auto missing = cli({"tasks", "show", "999999"});
  EXPECT_EQ(missing.code, 1);
  EXPECT_EQ(missing.err, "agentcron: tasks show: no task 999999\n");

  // One good id among refused ones: it is done, the others are named, the exit is 1.
  auto cancel = cli({"tasks", "cancel", std::to_string(pending), "999999", std::to_string(done)});
  EXPECT_EQ(cancel.code, 1);
  EXPECT_NE(cancel.out.find("task " + std::to_string(pending) + ": cancelled\n"), std::string::npos) << cancel.out;
  EXPECT_NE(cancel.err.find("agentcron: tasks cancel: no task 999999\n"), std::string::npos) << cancel.err;
  EXPECT_NE(cancel.err.find("task " + std::to_string(done) +
                            " is succeeded; only a pending or running task can be cancelled"),
            std::string::npos)
      << cancel.err;
  EXPECT_EQ(count("id = " + std::to_string(pending) + " AND status = 'cancelled' AND finished_at IS NOT NULL"), 1);
  auto again = cli({"tasks", "cancel", std::to_string(pending)});
  EXPECT_EQ(again.code, 0);
  EXPECT_EQ(again.out, "task " + std::to_string(pending) + ": cancelled already\n");

  auto retry = cli({"tasks", "retry", std::to_string(failed)});
  EXPECT_EQ(retry.code, 0) << retry.err;
  EXPECT_EQ(count("id = " + std::to_string(failed) +
                  " AND status = 'pending' AND attempts = 0 AND finished_at IS NULL AND scheduled_for <= now()"),
            1);
  auto retry_again = cli({"tasks", "retry", std::to_string(failed)});
  EXPECT_EQ(retry_again.code, 1);
  EXPECT_NE(retry_again.err.find("is pending; only a failed or cancelled task can be retried"), std::string::npos)
      << retry_again.err;

  EXPECT_EQ(cli({"tasks", "approve", std::to_string(waiting)}).code, 0);
  EXPECT_EQ(count("id = " + std::to_string(waiting) + " AND approval = 'approved' AND status = 'pending'"), 1);
  EXPECT_EQ(cli({"tasks", "reject", std::to_string(unwanted)}).code, 0);
  EXPECT_EQ(count("id = " + std::to_string(unwanted) + " AND approval = 'rejected' AND status = 'cancelled'"), 1);
  auto reject_approved = cli({"tasks", "reject", std::to_string(waiting)});
  EXPECT_EQ(reject_approved.code, 1);
  EXPECT_NE(reject_approved.err.find("only a pending task awaiting approval can be decided"), std::string::npos)
      << reject_approved.err;

  // Five succeeded tasks are older than a day, in batches of two; the cancelled one is not succeeded.
  auto purge = cli({"tasks", "purge", "--status", "succeeded", "--older-than", "1d", "--batch", "2"});
  EXPECT_EQ(purge.code, 0) << purge.err;
  EXPECT_EQ(purge.out, "purged 5 succeeded task(s)\n");
  EXPECT_EQ(count("status = 'succeeded'"), 0);
  EXPECT_EQ(count("status = 'cancelled'"), 2);

  // What agents and programs wrote reaches the terminal written out, never as escape sequences.
  auto hostile = insert("kind, status, finished_at, last_error",
                        "E'evil\\x1b[2J', 'failed', now(), E'\\x1b]0;pwned\\x07 and \\u009b31m'");
  for (const auto& args : std::vector<std::vector<std::string>>{{"tasks", "list", "--status", "failed"},
                                                                 {"tasks", "show", std::to_string(hostile)}}) {
    auto shown = cli(args);
    EXPECT_EQ(shown.code, 0) << shown.err;
    EXPECT_EQ(shown.out.find('\x1b'), std::string::npos) << shown.out;
    EXPECT_EQ(shown.out.find("\xc2\x9b"), std::string::npos) << shown.out;
    EXPECT_NE(shown.out.find("evil\\x1b[2J"), std::string::npos) << shown.out;
    EXPECT_NE(shown.out.find("\\x1b]0;pwned\\x07 and \\u009b31m"), std::string::npos) << shown.out;
  }

  EXPECT_EQ(cli({"tasks", "purge", "--status", "pending", "--older-than", "1d"}).code, 64);
  EXPECT_EQ(cli({"tasks", "cancel", "abc"}).code, 64);
  EXPECT_EQ(cli({"tasks", "frobnicate"}).code, 64);
  EXPECT_EQ(cli({"tasks", "list", "--format", "yaml"}).code, 64);
  for (std::vector<std::string> args : std::vector<std::vector<std::string>>{
           {"tasks", "--help"}, {"tasks", "list", "--help"}, {"tasks", "cancel", "--help"}, {"kinds", "--help"},
           {"schedules", "--help"}}) {
    auto h = run_agentcron(args);
    EXPECT_EQ(h.code, 0) << args[1];
    EXPECT_NE(h.out.find("example"), std::string::npos) << h.out;
  }
}

TEST_F(OperateE2E, AnApplicationEnqueuesCancelsAndRetriesWithOneSqlCallAndTheWorkerActsAtOnce) {
  // A long lease: the lease renewal (every 20 s) is not what stops the cancelled task.
  write_config("schedule = \"@every 5s\"\nconcurrency = 4\nlease = \"60s\"\n",
               "[handlers.mail]\ntype = \"notify\"\n[handlers.slow]\ntype = \"exec\"\ncommand = " +
                   std::string(kSleepCommand) + "\nkill_after = \"1s\"\n");
  Process worker({"--config", config_path, "run"});
  ASSERT_TRUE(eventually([&] {
    return db.scalar("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN%' AND datname = current_database()") > 0;
  })) << worker.err();

  // Enqueued by an application: due now, the insert's NOTIFY wakes the worker long before its 5 s tick.
  auto mail = db.scalar("SELECT agentcron.add_task('mail', '{\"to\":\"ops\"}')");
  ASSERT_TRUE(eventually([&] { return count("id = " + std::to_string(mail) + " AND status = 'succeeded'") == 1; }, 4s))
      << worker.err();
  // A dedup key returns the live task instead of a second one.
  auto slow = db.scalar("SELECT agentcron.add_task(kind => 'slow', payload => '{\"s\":\"60\"}', dedup_key => 'nightly-1')");
  EXPECT_EQ(db.scalar("SELECT agentcron.add_task(kind => 'slow', payload => '{\"s\":\"60\"}', dedup_key => 'nightly-1')"),
            slow);
  ASSERT_TRUE(eventually([&] { return count("id = " + std::to_string(slow) + " AND status = 'running'") == 1; }, 4s))
      << worker.err();

  // Cancelled while running: the worker hears agentcron_cancel, stops the sleeper at once and
  // drops its outcome; the row stays cancelled, the attempt is not retried.
  auto cancelled_at = std::chrono::steady_clock::now();
  EXPECT_EQ(db.text("SELECT agentcron.cancel_task(" + std::to_string(slow) + ")"), "t");
  // (Stopped while running, or dropped from the queue when its slot had not started it yet.)
  ASSERT_TRUE(worker.wait_for_log(" a task that was cancelled", 5s)) << worker.err();
  EXPECT_LT(std::chrono::steady_clock::now() - cancelled_at, 5s);
  EXPECT_EQ(count("id = " + std::to_string(slow) + " AND status = 'cancelled' AND attempts = 1"), 1);
  EXPECT_EQ(db.scalar("SELECT count(*) FROM agentcron.task_runs WHERE task_id = " + std::to_string(slow)), 0);
  EXPECT_EQ(db.text("SELECT agentcron.cancel_task(" + std::to_string(slow) + ")"), "f");  // cancelled already

  // Retried from SQL: pending with attempts reset — but not before the cancelled run's lease would
  // have ended (a worker without LISTEN notices a cancel only at its next renewal).
  db.exec("UPDATE agentcron.agent_tasks SET payload = '{\"s\":\"0\"}' WHERE id = " + std::to_string(slow));
  EXPECT_EQ(db.text("SELECT agentcron.retry_task(" + std::to_string(slow) + ")"), "t");
  EXPECT_EQ(count("id = " + std::to_string(slow) + " AND status = 'pending' AND attempts = 0 AND locked_by IS NULL "
                  "AND scheduled_for > now() + interval '30 seconds'"),
            1);
  // Brought forward by hand, it is claimed again (attempt 1) and succeeds.
  db.exec("UPDATE agentcron.agent_tasks SET scheduled_for = now() WHERE id = " + std::to_string(slow));
  db.exec("SELECT pg_notify('agentcron_due', '')");
  ASSERT_TRUE(eventually([&] { return count("id = " + std::to_string(slow) + " AND status = 'succeeded' AND attempts = 1") == 1; }, 4s))
      << worker.err();
  // A task cancelled while pending is retried for now.
  auto later = db.scalar("SELECT agentcron.add_task('mail', run_at => now() + interval '1 hour')");
  EXPECT_EQ(db.text("SELECT agentcron.cancel_task(" + std::to_string(later) + ")"), "t");
  EXPECT_EQ(db.text("SELECT agentcron.retry_task(" + std::to_string(later) + ")"), "t");
  ASSERT_TRUE(eventually([&] { return count("id = " + std::to_string(later) + " AND status = 'succeeded'") == 1; }, 4s))
      << worker.err();

  EXPECT_EQ(sqlstate_of("SELECT agentcron.cancel_task(999999)"), "P0002");
  EXPECT_EQ(sqlstate_of("SELECT agentcron.retry_task(" + std::to_string(mail) + ")"), "55000");
  EXPECT_EQ(sqlstate_of("SELECT agentcron.add_task('mail', '[1]')"), "22023");
  worker.signal(SIGTERM);
  EXPECT_EQ(worker.wait(15s), 0) << worker.err();
}

TEST_F(OperateE2E, AKindsConcurrencyLimitHoldsInThisProcessAndAPausedKindWaitsForItsResume) {
  // Each slow run writes "+" as it starts and "-" as it ends: the most at once is the deepest nesting.
  std::string trace = config_path + ".trace";
  // A tick every 30 s: the limited kind's backlog moves on because each freed slot of it wakes
  // the poller, not because the schedule comes round.
  write_config("schedule = \"@every 30s\"\nconcurrency = 8\n",
               "[handlers.slow]\ntype = \"exec\"\ncommand = [\"/bin/sh\", \"-c\", \"echo + >> " + trace +
                   "; sleep 0.3; echo - >> " + trace + "\"]\nconcurrency = 2\n[handlers.quick]\ntype = \"notify\"\n");
  db.exec("INSERT INTO agentcron.agent_tasks (kind, priority) SELECT 'slow', 1 FROM generate_series(1, 8)");
  db.exec("INSERT INTO agentcron.agent_tasks (kind) SELECT 'quick' FROM generate_series(1, 20)");
  Process worker({"--config", config_path, "run"});
  bool quick_done_first = false;
  ASSERT_TRUE(eventually(
      [&] {
        if (count("kind = 'quick' AND status = 'succeeded'") == 20 && count("kind = 'slow' AND status = 'succeeded'") < 8)
          quick_done_first = true;
        return count("kind = 'slow' AND status = 'succeeded'") == 8;
      },
      15s))
      << worker.err();
  std::ifstream in(trace);
  int depth = 0, most = 0, runs = 0;
  for (std::string line; std::getline(in, line);) {
    depth += line == "+" ? 1 : -1;
    runs += line == "+";
    most = std::max(most, depth);
  }
  ::unlink(trace.c_str());
  EXPECT_EQ(runs, 8);
  EXPECT_EQ(most, 2) << "the slow kind ran more than its limit at once, or never two";
  EXPECT_TRUE(quick_done_first) << "the quick kind waited behind the limited one";

  // Paused fleet-wide: its new tasks stay pending while other kinds go on; resumed, they run.
  auto pause = cli({"kinds", "pause", "quick"});
  ASSERT_EQ(pause.code, 0) << pause.err;
  EXPECT_EQ(pause.out, "kind quick: paused\n");
  EXPECT_NE(cli({"kinds", "list"}).out.find("quick"), std::string::npos);
  db.exec("INSERT INTO agentcron.agent_tasks (kind) SELECT 'quick' FROM generate_series(1, 5)");
  auto marker = insert("kind, payload", "'slow', '{\"s\":\"0\"}'");
  ASSERT_TRUE(eventually([&] { return count("id = " + std::to_string(marker) + " AND status = 'succeeded'") == 1; }))
      << worker.err();
  EXPECT_EQ(count("kind = 'quick' AND status = 'pending'"), 5) << "a paused kind was claimed";
  ASSERT_EQ(cli({"kinds", "resume", "quick"}).code, 0);
  ASSERT_TRUE(eventually([&] { return count("kind = 'quick' AND status = 'succeeded'") == 25; }, 5s)) << worker.err();
  EXPECT_EQ(cli({"kinds", "resume", "quick"}).out, "kind quick: resumed already\n");
  worker.signal(SIGTERM);
  EXPECT_EQ(worker.wait(15s), 0) << worker.err();
}

TEST_F(OperateE2E, ANamedScheduleRunsOncePerFireOnAThreeProcessFleetAndFollowsTheFile) {
  const std::string schedules =
      "[handlers.beat]\ntype = \"notify\"\n[handlers.report]\ntype = \"notify\"\n"
      "[schedules.beat]\ncron = \"*/2 * * * * *\"\nkind = \"beat\"\npayload = { source = \"file\" }\n"
      "[schedules.nightly]\ncron = \"30 2 * * *\"\ntimezone = \"Europe/Berlin\"\nkind = \"report\"\npriority = 3\n";
  write_config("schedule = \"@every 100ms\"\nconcurrency = 4\n", schedules);
  std::vector<std::unique_ptr<Process>> fleet;
  for (int i = 0; i < 3; ++i)
    fleet.push_back(std::make_unique<Process>(std::vector<std::string>{"--config", config_path, "run"}));
  ASSERT_TRUE(eventually([&] { return db.scalar("SELECT count(*) FROM agentcron.schedules") == 2; })) << fleet[0]->err();
  // However the three syncs interleaved: one carrying task per schedule.
  ASSERT_TRUE(eventually([&] { return count("dedup_key = 'schedule:beat'") >= 1 && count("dedup_key = 'schedule:nightly'") >= 1; }));
  EXPECT_EQ(count("dedup_key = 'schedule:beat'"), 1);
  EXPECT_EQ(count("dedup_key = 'schedule:nightly' AND status = 'pending' AND priority = 3"), 1);
  EXPECT_EQ(db.text("SELECT payload->>'source' FROM agentcron.agent_tasks WHERE dedup_key = 'schedule:beat'"), "file");
  // The nightly fire is 02:30 in Berlin.
  EXPECT_EQ(db.text("SELECT to_char(scheduled_for AT TIME ZONE 'Europe/Berlin', 'HH24:MI') FROM agentcron.agent_tasks "
                    "WHERE dedup_key = 'schedule:nightly'"),
            "02:30");

  // Five fires, two seconds apart: each ran exactly once, whichever process claimed it.
  std::string beat_id = db.text("SELECT id FROM agentcron.agent_tasks WHERE dedup_key = 'schedule:beat'");
  std::string runs = "SELECT count(*) FROM agentcron.task_runs WHERE task_id = " + beat_id + " AND outcome = 'succeeded'";
  ASSERT_TRUE(eventually([&] { return db.scalar(runs) >= 5; }, 30s)) << fleet[0]->err();
  std::string gaps = "SELECT extract(epoch FROM started_at - lag(started_at) OVER (ORDER BY started_at)) AS gap "
                     "FROM agentcron.task_runs WHERE task_id = " + beat_id;
  double shortest = std::stod(db.text("SELECT min(gap) FROM (" + gaps + ") g"));
  double longest = std::stod(db.text("SELECT max(gap) FROM (" + gaps + ") g"));
  EXPECT_GT(shortest, 1.5) << "a fire ran twice";
  EXPECT_LT(longest, 2.5) << "a fire was missed";
  EXPECT_EQ(db.scalar("SELECT count(*) FROM agentcron.task_runs WHERE task_id = " + beat_id + " AND outcome <> 'succeeded'"), 0);

  auto list = cli({"schedules", "list", "--format", "json"});
  ASSERT_EQ(list.code, 0) << list.err;
  EXPECT_NE(list.out.find("\"name\":\"nightly\""), std::string::npos) << list.out;
  EXPECT_NE(list.out.find("T02:30:00\""), std::string::npos) << list.out;  // next fire, local time
  EXPECT_NE(list.out.find("\"last_outcome\":\"succeeded\""), std::string::npos) << list.out;

  // run-now: the pending nightly occurrence runs now; the next one is again at 02:30 Berlin.
  auto now = cli({"schedules", "run-now", "nightly"});
  ASSERT_EQ(now.code, 0) << now.err;
  std::string nightly_id = db.text("SELECT id FROM agentcron.agent_tasks WHERE dedup_key = 'schedule:nightly'");
  ASSERT_TRUE(eventually([&] {
    return db.scalar("SELECT count(*) FROM agentcron.task_runs WHERE task_id = " + nightly_id) == 1;
  }, 5s));
  ASSERT_TRUE(eventually([&] { return count("id = " + nightly_id + " AND status = 'pending'") == 1; }, 5s));
  EXPECT_EQ(db.text("SELECT to_char(scheduled_for AT TIME ZONE 'Europe/Berlin', 'HH24:MI') FROM agentcron.agent_tasks "
                    "WHERE id = " + nightly_id),
            "02:30");

  // Paused: its occurrence is cancelled; resumed: a new one at the next fire.
  ASSERT_EQ(cli({"schedules", "pause", "nightly"}).code, 0);
  EXPECT_EQ(count("dedup_key = 'schedule:nightly' AND status IN ('pending', 'running')"), 0);
  auto paused_run = cli({"schedules", "run-now", "nightly"});
  EXPECT_EQ(paused_run.code, 1);
  EXPECT_NE(paused_run.err.find("has no pending occurrence"), std::string::npos) << paused_run.err;
  ASSERT_EQ(cli({"schedules", "resume", "nightly"}).code, 0);
  EXPECT_EQ(count("dedup_key = 'schedule:nightly' AND status = 'pending'"), 1);
  EXPECT_EQ(cli({"schedules", "pause", "no-such"}).code, 1);

  // A worker whose file declares no [schedules] leaves them alone (one split by kind, a one-off).
  std::string plain = config_path + ".plain.toml";
  std::ofstream(plain) << "[database]\nurl = \"" << db.url() << "\"\n[handlers.other]\ntype = \"notify\"\n";
  auto once = run_agentcron({"--config", plain, "once"});
  EXPECT_EQ(once.code, 0) << once.err;
  ::unlink(plain.c_str());
  EXPECT_EQ(db.scalar("SELECT count(*) FROM agentcron.schedules WHERE enabled"), 2);

  // Removed from the file and reloaded: disabled (not deleted) and reported; its task cancelled.
  write_config("schedule = \"@every 100ms\"\nconcurrency = 4\n",
               "[handlers.beat]\ntype = \"notify\"\n[handlers.report]\ntype = \"notify\"\n"
               "[schedules.beat]\ncron = \"*/2 * * * * *\"\nkind = \"beat\"\npayload = { source = \"file\" }\n");
  fleet[1]->signal(SIGHUP);
  ASSERT_TRUE(fleet[1]->wait_for_log("schedule is no longer in the configuration", 10s)) << fleet[1]->err();
  EXPECT_EQ(db.text("SELECT enabled FROM agentcron.schedules WHERE name = 'nightly'"), "f");
  EXPECT_EQ(count("dedup_key = 'schedule:nightly' AND status IN ('pending', 'running')"), 0);
  EXPECT_EQ(count("dedup_key = 'schedule:beat' AND status IN ('pending', 'running')"), 1);
  for (auto& p : fleet) p->signal(SIGTERM);
  for (auto& p : fleet) EXPECT_EQ(p->wait(15s), 0) << p->err();
}

}  // namespace
}  // namespace agentcron
