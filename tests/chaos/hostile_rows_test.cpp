// Chaos, hostile rows: 1,000 rows built to hurt a worker, among 1,000 good ones, served by the
// built binary. Payloads that are not objects, 5 MB payloads, broken cron expressions, unknown
// time zones, agents that reply in invalid UTF-8, tasks with a 1 ms time limit and agent ids that
// make the completion's NOTIFY too long — and a scheduled_for of -infinity, which the table now
// refuses. The worker never exits, every good row succeeds, and every bad row ends failed with a
// reason that names what was wrong. Prints its figures.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>

#include "support/process.hpp"
#include "support/test_db.hpp"

namespace agentcron {
namespace {

using namespace std::chrono_literals;
using testing::eventually;
using testing::Process;
using testing::TestDatabase;

struct Hostile {
  const char* what;
  int rows;
  const char* insert;   // SELECT … FROM generate_series(1, rows): kind, payload, agent_id, cron, timezone, timeout_ms, max_attempts
  const char* reason;   // LIKE pattern every such row's last_error must match
  bool one_line;        // the reason is a single line (an exec tail may hold the program's lines)
};

const Hostile kHostile[] = {
    {"payload not an object", 200,
     "SELECT 'good', (ARRAY['[1,2]', '\"text\"', '42', 'null', 'true'])[1 + i % 5]::jsonb, NULL, NULL, 'UTC', NULL, 5",
     "payload must be a JSON object, got %", true},
    {"5 MB payload", 5,
     "SELECT 'good', jsonb_build_object('blob', repeat('x', 5000000)), NULL, NULL, 'UTC', NULL, 5",
     "the payload is 500001_ bytes, more than executor.max_payload_bytes allows; it was not read", true},
    {"invalid cron", 195, "SELECT 'good', '{}'::jsonb, NULL, 'every tuesday-ish', 'UTC', NULL, 5",
     "%\"every tuesday-ish\"%", true},
    {"unknown time zone", 200, "SELECT 'good', '{}'::jsonb, NULL, '*/5 * * * *', 'Mars/Olympus_Mons', NULL, 5",
     "%Mars/Olympus_Mons%", true},
    {"invalid UTF-8 reply", 200, "SELECT 'agent_utf8', '{}'::jsonb, NULL, NULL, 'UTC', NULL, 1", "exit 1: %", false},
    {"timeout_ms = 1", 150, "SELECT 'slow', '{}'::jsonb, NULL, NULL, 'UTC', 1, 1", "timed out after 1ms", true},
    {"agent id too long for NOTIFY", 50, "SELECT 'good', '{}'::jsonb, repeat('a', 10000), NULL, 'UTC', NULL, 5",
     "the database refused this run''s outcome: %payload string too long%", true},
};

TEST(ChaosHostileRows, AThousandHostileRowsFailAloneWhileAThousandGoodOnesSucceed) {
  TestDatabase db;
  std::string config = "/tmp/agentcron-chaos-hostile-" + std::to_string(::getpid()) + ".toml";
  std::ofstream(config) << "[database]\nurl = \"" << db.url() << "\"\nconnection_limit = 4\n"
                        << "[scheduler]\nschedule = \"@every 500ms\"\nconcurrency = 64\nbatch_size = 100\n"
                        << "[metrics]\nlisten = \"\"\n[log]\nformat = \"json\"\nlevel = \"warn\"\n"
                        << "[handlers.good]\ntype = \"notify\"\n"
                        << "[handlers.agent_utf8]\ntype = \"exec\"\ncommand = [\"/bin/sh\", \"-c\", "
                        << "\"printf '\\\\377\\\\376 not utf-8 '; i=0; while [ $i -lt 1500 ]; do printf '\\\\346\\\\227'; "
                        << "i=$((i+1)); done; exit 1\"]\n"
                        << "[handlers.slow]\ntype = \"exec\"\ncommand = [\"/bin/sleep\", \"5\"]\nkill_after = \"1s\"\n";
  // -infinity is refused at the door: it never becomes a row that could stop a claim.
  bool refused = false;
  try {
    db.exec("INSERT INTO agentcron.agent_tasks (kind, scheduled_for) VALUES ('good', '-infinity')");
  } catch (const pqxx::check_violation&) {
    refused = true;
  }
  EXPECT_TRUE(refused);
  int hostile = 0;
  for (const Hostile& h : kHostile) {
    db.exec(std::string("INSERT INTO agentcron.agent_tasks (kind, payload, agent_id, cron, timezone, timeout_ms, max_attempts) ") +
            h.insert + " FROM generate_series(1, " + std::to_string(h.rows) + ") i");
    hostile += h.rows;
  }
  ASSERT_EQ(hostile, 1000);
  db.exec("INSERT INTO agentcron.agent_tasks (kind, payload) "
          "SELECT 'good', jsonb_build_object('n', i) FROM generate_series(1, 1000) i ORDER BY random()");
  db.exec("UPDATE agentcron.agent_tasks SET scheduled_for = now() - interval '1 second'");  // all due, shuffled ids

  auto start = std::chrono::steady_clock::now();
  Process w({"--config", config, "run"});
  bool settled = eventually(
      [&] { return db.scalar("SELECT count(*) FROM agentcron.agent_tasks WHERE status IN ('pending', 'running')") == 0; },
      180s);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  bool alive = w.running();
  w.signal(SIGTERM);
  auto code = w.wait(30s);
  ::unlink(config.c_str());
  ASSERT_TRUE(settled) << w.err().substr(0, 4000);
  EXPECT_TRUE(alive) << w.err().substr(0, 4000);
  EXPECT_EQ(code, 0) << w.err().substr(0, 4000);

  std::int64_t good = db.scalar("SELECT count(*) FROM agentcron.agent_tasks WHERE payload ? 'n' AND status = 'succeeded'");
  std::printf("chaos hostile rows: %lld of 1000 good succeeded, settled in %.1f s\n", static_cast<long long>(good), seconds);
  EXPECT_EQ(good, 1000);
  std::int64_t failed_total = 0;
  for (const Hostile& h : kHostile) {
    std::string match = std::string("status = 'failed' AND last_error LIKE '") + h.reason + "'" +
                        (h.one_line ? " AND position(chr(10) in last_error) = 0" : "");
    std::int64_t n = db.scalar("SELECT count(*) FROM agentcron.agent_tasks WHERE NOT payload ? 'n' AND " + match);
    std::printf("  %-30s %4d rows, %4lld failed with the reason\n", h.what, h.rows, static_cast<long long>(n));
    failed_total += n;
  }
  // Every hostile row failed, each with its own category's reason (the patterns do not overlap).
  EXPECT_EQ(failed_total, 1000);
  EXPECT_EQ(db.scalar("SELECT count(*) FROM agentcron.agent_tasks WHERE NOT payload ? 'n' AND status <> 'failed'"), 0);
  EXPECT_EQ(db.scalar("SELECT count(*) FROM agentcron.task_runs WHERE outcome = 'rescued'"), 0);
  std::string err = w.err();
  EXPECT_EQ(err.find("terminate called"), std::string::npos);
  EXPECT_EQ(err.find("lease expired"), std::string::npos);
}

}  // namespace
}  // namespace agentcron
