// TaskStore against a real PostgreSQL: every method, concurrency of claims, timeouts, bad rows.
#include "agentcron/pg_task_store.hpp"
#include "admin_statements.hpp"
#include "pg_execution.hpp"
#include "pg_statements.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <future>
#include <spdlog/sinks/ostream_sink.h>

#include <signal.h>

#include <set>
#include <sstream>
#include <thread>

#include "agentcron/janitor.hpp"
#include "agentcron/log.hpp"
#include "agentcron/retry.hpp"
#include "agentcron/schedule_syncer.hpp"
#include "support/test_db.hpp"

namespace agentcron {
namespace {

using namespace std::chrono_literals;
using testing::TestDatabase;

class StoreTest : public ::testing::Test {
 protected:
  TestDatabase db;
  std::ostringstream logs;
  Logger log{LogFormat::text, LogLevel::info, std::make_shared<spdlog::sinks::ostream_sink_mt>(logs)};
  Config config = db.config();
  std::unique_ptr<ConnectionPool> pool;
  std::unique_ptr<PgTaskStore> store;

  void SetUp() override { open(config); }
  void open(const Config& c) {
    store.reset();
    pool = std::make_unique<ConnectionPool>(PoolOptions::from_config(c, "w1"), log);
    store = std::make_unique<PgTaskStore>(*pool, StoreOptions::from_config(c), log);
  }
  ClaimParams claim(int limit, std::string worker = "w1", std::vector<std::string> kinds = {"noop"}) {
    return ClaimParams{limit, std::move(kinds), std::move(worker), 60s};
  }
};

TEST_F(StoreTest, ClaimTakesDueTasksInPriorityThenTimeOrderAndLeasesThem) {
  db.exec(
      "INSERT INTO agentcron.agent_tasks (kind, priority, scheduled_for) VALUES "
      "('noop', 0, now() - interval '3 min'), ('noop', 5, now() - interval '1 min'), "
      "('noop', 0, now() - interval '5 min'), ('noop', 0, now() + interval '1 hour'), "
      "('other', 9, now() - interval '1 min')");
  db.exec("INSERT INTO agentcron.agent_tasks (kind, approval) VALUES ('noop', 'pending'), ('noop', 'rejected')");
  auto tasks = store->claim_due(claim(10));
  ASSERT_EQ(tasks.size(), 3u);  // not the future one, not another kind, not unapproved
  std::vector<std::int64_t> ids;
  for (auto& t : tasks) ids.push_back(t.id);
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(ids, (std::vector<std::int64_t>{1, 2, 3}));
  EXPECT_EQ(tasks[0].attempt, 1);
  EXPECT_EQ(db.scalar("SELECT count(*) FROM agentcron.agent_tasks WHERE status = 'running' AND locked_by = 'w1' "
                      "AND locked_until > now() + interval '50 seconds'"),
            3);
  // The order: priority 5 first, then the oldest.
  db.exec("UPDATE agentcron.agent_tasks SET status = 'pending', locked_by = NULL, locked_until = NULL, attempts = 0");
  EXPECT_EQ(store->claim_due(claim(1)).at(0).id, 2);
  EXPECT_EQ(store->claim_due(claim(1)).at(0).id, 3);
  EXPECT_EQ(store->claim_due(claim(1)).at(0).id, 1);
  EXPECT_TRUE(store->claim_due(claim(1)).empty());
}

// libpqxx 6.4 swallows a broken connection under LISTEN and registers the receiver anyway: a
// subscription on a pooled connection the server had ended (a failover, idle_session_timeout)
// listened to nothing, and its waits returned empty for ever, never asking for a new connection.
// It must fail instead, and the next one work.
TEST_F(StoreTest, ASubscriptionOnAConnectionTheServerEndedFailsRatherThanListenToNothing) {
  PoolOptions o = PoolOptions::from_config(config, "w1");
  o.idle_check_after = std::chrono::hours(1);  // hand the dead connection out unchecked, as within 1 s
  ConnectionPool unchecked(o, log);
  PgTaskStore s(unchecked, StoreOptions::from_config(config), log);
  s.now();  // one connection, idle in the pool
  const std::string others = "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()";
  db.exec("SELECT pg_terminate_backend(pid) " + others);
  ASSERT_TRUE(testing::eventually([&] { return db.scalar("SELECT count(*) " + others) == 0; }));
  try {
    s.subscribe({"agentcron_due"});
    FAIL() << "subscribed on a connection the server had ended";
  } catch (const DatabaseError& e) {
    EXPECT_TRUE(e.is_transient()) << e.what();
  }
  auto sub = s.subscribe({"agentcron_due"});
  db.exec("NOTIFY agentcron_due");
  auto got = sub->wait(std::chrono::seconds(10), -1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].channel, "agentcron_due");
  // A connection that dies under a live subscription fails its next wait, not returns empty.
  db.exec("SELECT pg_terminate_backend(pid) " + others);
  ASSERT_TRUE(testing::eventually([&] { return db.scalar("SELECT count(*) " + others) == 0; }));
  bool lost = false;
  for (int i = 0; i < 3 && !lost; ++i) {
    try {
      sub->wait(std::chrono::milliseconds(200), -1);
    } catch (const DatabaseError& e) {
      lost = e.is_transient();
    }
  }
  EXPECT_TRUE(lost);
}

// A sync of the file that fails — the database down at start, or the schedules' lock held past
// timeouts.lock while many workers start — is tried again by the next round. The rounds used to
// only maintain the database's schedules, so a new [schedules.<name>] never fired, and a changed
// or removed one was not applied, until a SIGHUP or a restart.
TEST_F(StoreTest, AScheduleSyncThatFailedIsTriedAgainByTheNextRound) {
  Config c = config;
  c.schedules_declared = true;
  ScheduleConfig beat;
  beat.name = "beat";
  beat.cron = "*/5 * * * * *";
  beat.kind = "noop";
  c.schedules = {beat};
  c.timeouts.lock = 200ms;
  open(c);
  pqxx::connection other(db.conninfo());
  pqxx::work held(other);
  held.exec("SELECT pg_advisory_xact_lock(" + std::to_string(pg::admin::kScheduleLockKey) + ")");
  ScheduleSyncer syncer({}, c, *store, log);
  EXPECT_FALSE(syncer.run_once());  // the lock is held: 55P03
  EXPECT_EQ(db.scalar("SELECT count(*) FROM agentcron.schedules"), 0);
  held.commit();
  ASSERT_TRUE(syncer.tick());
  EXPECT_EQ(db.scalar("SELECT count(*) FROM agentcron.schedules WHERE name = 'beat'"), 1);
  EXPECT_EQ(db.scalar("SELECT count(*) FROM agentcron.agent_tasks WHERE kind = 'noop' AND status = 'pending'"), 1);
  EXPECT_NE(logs.str().find("until the next round tries again"), std::string::npos) << logs.str();
}

// The plan of the claim statement the store really sends (pg_statements.hpp), not of a copy.
TEST_F(StoreTest, ClaimUsesTheDueIndex) {
  db.insert_due(2000);
  db.exec("ANALYZE agentcron.agent_tasks");
  pqxx::nontransaction tx(db.sql());
  tx.exec(std::string("PREPARE claim_plan AS ") + pg::claim_statement(1).sql);
  std::string plan;
  for (const auto& row : tx.exec("EXPLAIN EXECUTE claim_plan('{noop}', 50, 'w1', 60000, 1048576, '{}', '{}')"))
    plan += row[0].as<std::string>() + "\n";
  tx.exec("DEALLOCATE claim_plan");
  EXPECT_NE(plan.find("agent_tasks_due_idx"), std::string::npos) << plan;
}

// Kinds as a list of SQL string literals ("'noop', 'mail'"), for IN (…) and ARRAY[…]; the tests'
// kinds are plain words.
std::string sql_list(const std::vector<std::string>& kinds) {
  std::string out;
  for (const auto& k : kinds) out += (out.empty() ? "'" : ", '") + k + "'";
  return out;
}

// The shared buffers an EXPLAIN (ANALYZE, BUFFERS) plan touched: its first "Buffers:" line is the
// top node's, which counts its children's too.
std::int64_t top_buffers(const std::string& plan) {
  auto at = plan.find("Buffers:");
  std::string top = at == std::string::npos ? "" : plan.substr(at, plan.find('\n', at) - at);
  std::int64_t n = 0;
  auto hit = top.find("hit="), read = top.find("read=");
  if (hit != std::string::npos) n += std::stoll(top.substr(hit + 4));
  if (read != std::string::npos) n += std::stoll(top.substr(read + 5));
  return n;
}

// EXPLAIN (ANALYZE, BUFFERS) of one of the store's statements as the store sends it, in a
// transaction rolled back: prepared, with its generic plan when the statement asks for one (made
// from the statement alone), or — `inlined` — its parameters inlined, as pgbouncer mode sends it (a
// custom plan). `params`: SQL literals.
std::string explain(pqxx::connection& c, const pg::Statement& s, const std::vector<std::string>& params,
                    bool inlined = false) {
  pqxx::work tx(c);
  if (!inlined) tx.exec(std::string("PREPARE explained AS ") + s.sql);
  if (s.generic_plan) tx.exec(pg::kGenericPlanSql);
  std::string run = inlined ? pg::inline_params(s.sql, params) : "EXECUTE explained(";
  for (std::size_t i = 0; !inlined && i < params.size(); ++i) run += (i ? ", " : "") + params[i];
  if (!inlined) run += ")";
  std::string plan;
  for (const auto& row : tx.exec("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + run)) plan += row[0].as<std::string>() + "\n";
  if (!inlined) tx.exec("DEALLOCATE explained");  // a session's, not the transaction's
  tx.abort();
  return plan;
}

// EXPLAIN (ANALYZE, BUFFERS) of the real claim statement, in a transaction rolled back: the
// buffers it touched (its top node's count) and the rows it claimed.
struct ClaimCost {
  std::int64_t buffers = 0;
  std::int64_t claimed = 0;
  std::string plan;
};
// `kinds`: an array literal of n kinds, claimed with the statement the store sends for n.
// `inlined`: as pgbouncer mode sends it, its parameters inlined (a custom plan), else prepared.
ClaimCost explain_claim(pqxx::connection& c, int limit, const std::string& kinds = "{noop}", bool inlined = false) {
  const pg::Statement& claim = pg::claim_statement(static_cast<std::size_t>(std::count(kinds.begin(), kinds.end(), ',') + 1));
  ClaimCost cost;
  cost.plan = explain(c, claim, {"'" + kinds + "'", std::to_string(limit), "'w1'", "60000", "1048576", "'{}'", "'{}'"}, inlined);
  auto first_number_after = [&](const std::string& what) -> std::int64_t {
    auto at = cost.plan.find(what);
    return at == std::string::npos ? 0 : std::stoll(cost.plan.substr(at + what.size()));
  };
  cost.buffers = top_buffers(cost.plan);
  cost.claimed = first_number_after("rows=");
  return cost;
}

// The claim must not walk the tasks waiting in the future: with a priority-led due index, one
// ordered scan read every future task of a priority before the due ones of the next (thousands
// of buffers at 100,000 future tasks). Measured on the statement the store sends.
TEST_F(StoreTest, TheClaimsCostDoesNotGrowWithTasksWaitingInTheFuture) {
  auto add_future = [&](int from, int to) {
    db.exec("INSERT INTO agentcron.agent_tasks (kind, priority, scheduled_for) "
            "SELECT 'noop', (g % 6 - 2)::smallint, now() + interval '1 hour' + g * interval '1 second' "
            "FROM generate_series(" + std::to_string(from) + ", " + std::to_string(to) + ") g");
    db.exec("VACUUM ANALYZE agentcron.agent_tasks");
  };
  db.exec("INSERT INTO agentcron.agent_tasks (kind, priority, scheduled_for) "
          "SELECT 'noop', (g % 6 - 2)::smallint, now() - interval '1 minute' FROM generate_series(1, 10) g");
  add_future(1, 20000);
  ClaimCost before = explain_claim(db.sql(), 500);
  ASSERT_EQ(before.claimed, 10) << before.plan;
  add_future(20001, 200000);
  ClaimCost after = explain_claim(db.sql(), 500);
  ASSERT_EQ(after.claimed, 10) << after.plan;
  // Ten times the future tasks: at most a level more in each index, nothing near their pages
  // (the priority-led scan read over a thousand buffers more).
  EXPECT_LE(after.buffers, before.buffers * 3 / 2) << "before:\n" << before.plan << "after:\n" << after.plan;
}

// The janitor reads each status's expired range alone (the finished index led by status,
// migration 0010): the failures it keeps — younger than retention.failed — are never stepped over.
// Led by finished_at alone, the index made every statement read every kept failure of the last
// 7 to 30 days (160 ms a million). Nor do the runs it keeps cost anything: the old runs found are
// deleted one key probe each (joined with IN, the generic plan hashed all of task_runs' key, 190 ms
// a million). Measured on the statement the store sends, with its plan.
TEST_F(StoreTest, TheJanitorsCostDoesNotGrowWithTheFailuresItKeeps) {
  auto explain_janitor = [&] { return explain(db.sql(), pg::kDeleteFinished, {"604800000", "2592000000", "500"}); };
  db.exec("INSERT INTO agentcron.agent_tasks (kind, cron) VALUES ('noop', '0 * * * *')");  // id 1: runs' task
  db.exec("INSERT INTO agentcron.agent_tasks (kind, status, finished_at) "
          "SELECT 'noop', 'succeeded', now() - interval '8 days' FROM generate_series(1, 50)");
  auto add_runs = [&](int n, const std::string& age) {
    db.exec("INSERT INTO agentcron.task_runs (task_id, attempt, outcome, finished_at) SELECT 1, 1, 'succeeded', now() - interval '" +
            age + "' FROM generate_series(1, " + std::to_string(n) + ")");
  };
  add_runs(50, "40 days");
  db.exec("VACUUM ANALYZE agentcron.agent_tasks");
  db.exec("VACUUM ANALYZE agentcron.task_runs");
  std::string before = explain_janitor();
  db.exec("INSERT INTO agentcron.agent_tasks (kind, status, finished_at) "
          "SELECT 'noop', (ARRAY['failed', 'cancelled'])[1 + g % 2], now() - interval '10 days' + g * interval '1 ms' "
          "FROM generate_series(1, 100000) g");
  add_runs(100000, "1 day");
  db.exec("VACUUM ANALYZE agentcron.agent_tasks");
  db.exec("VACUUM ANALYZE agentcron.task_runs");
  std::string after = explain_janitor();
  // A hundred thousand kept tasks and runs: nothing of them read (stepping over the tasks, or
  // hashing the runs' key, cost a thousand buffers more).
  EXPECT_LE(top_buffers(after), top_buffers(before) * 3 / 2) << "before:\n" << before << "after:\n" << after;
  FinishedDeleted deleted = store->delete_finished(std::chrono::hours(24 * 7), std::chrono::hours(24 * 30), 500);
  EXPECT_EQ(deleted.tasks, 50);
  EXPECT_EQ(deleted.runs, 50);
  EXPECT_EQ(db.scalar("SELECT count(*) FROM agentcron.agent_tasks WHERE status IN ('failed', 'cancelled')"), 100000);
  EXPECT_EQ(db.scalar("SELECT count(*) FROM agentcron.task_runs"), 100000);
}

// The claim runs its generic plan, which costs LIMIT $2 as a tenth of the rows: with a large due
// backlog in shuffled heap order it must still walk the due index in order and stop at the
// limit — no bitmap heap scan or sequential scan of the backlog and no sort of it.
TEST_F(StoreTest, TheGenericClaimPlanWalksTheDueIndexWhateverTheBacklog) {
  db.exec("INSERT INTO agentcron.agent_tasks (kind, scheduled_for) "
          "SELECT 'noop', now() - random() * interval '1 day' FROM generate_series(1, 100000)");
  db.exec("VACUUM ANALYZE agentcron.agent_tasks");
  ClaimCost cost = explain_claim(db.sql(), 500);
  ASSERT_EQ(cost.claimed, 500) << cost.plan;
  EXPECT_EQ(cost.plan.find("Bitmap Heap Scan on agent_tasks"), std::string::npos) << cost.plan;
  EXPECT_EQ(cost.plan.find("Seq Scan on agent_tasks"), std::string::npos) << cost.plan;
  EXPECT_NE(cost.plan.find("Index Scan using agent_tasks_due_idx"), std::string::npos) << cost.plan;
  // A buffer or so per row claimed and its index entries, never the backlog's 1,000 pages twice.
  EXPECT_LT(cost.buffers, 20 * 500) << cost.plan;
  // The statement for several kinds, the backlog split among them: their ranges merged as read
  // (no sort of a whole range) and each locked up to its share.
  db.exec("UPDATE agentcron.agent_tasks SET kind = (ARRAY['noop','mail','chat'])[1 + id % 3]");
  db.exec("VACUUM ANALYZE agentcron.agent_tasks");
  for (bool inlined : {false, true}) {  // prepared, and as pgbouncer mode sends it
    SCOPED_TRACE(inlined ? "inlined" : "prepared");
    ClaimCost several = explain_claim(db.sql(), 500, "{noop,mail,chat}", inlined);
    ASSERT_EQ(several.claimed, 500) << several.plan;
    // The quota's Merge Append read about one row per row claimed (a sort would have read them all).
    auto merge = several.plan.find("Merge Append (actual");
    ASSERT_NE(merge, std::string::npos) << several.plan;
    auto rows = several.plan.find("rows=", merge);
    EXPECT_LE(std::stoll(several.plan.substr(rows + 5)), 500 + 3) << several.plan;
    EXPECT_EQ(several.plan.find("Bitmap Heap Scan on agent_tasks"), std::string::npos) << several.plan;
    EXPECT_EQ(several.plan.find("Seq Scan on agent_tasks"), std::string::npos) << several.plan;
    EXPECT_LT(several.buffers, 25 * 500) << several.plan;
  }
}

// A claim reads only the kinds it takes: a kind paused fleet-wide or with no handler here may
// have a backlog older than anything else due (that is when kinds get paused), and a due index
// in one order for all kinds made every claim step over all of it. Measured on the statements the
// store sends for one kind and for three (merged), with the backlog grown tenfold.
TEST_F(StoreTest, AClaimNeverReadsTheDueRowsOfKindsItDoesNotTake) {
  auto add_backlog = [&](int n) {
    db.exec("INSERT INTO agentcron.agent_tasks (kind, scheduled_for) SELECT k, now() - interval '1 day' + g * interval '1 ms' "
            "FROM generate_series(1, " + std::to_string(n) + ") g, unnest('{held,unhandled}'::text[]) k");
    db.exec("VACUUM ANALYZE agentcron.agent_tasks");
  };
  db.exec("INSERT INTO agentcron.agent_tasks (kind, priority, scheduled_for) SELECT k, (g % 3)::smallint, "
          "now() - interval '1 minute' FROM generate_series(1, 10) g, unnest('{noop,mail}'::text[]) k");
  db.exec("INSERT INTO agentcron.paused_kinds (kind) VALUES ('held')");
  add_backlog(5000);
  ClaimCost one = explain_claim(db.sql(), 500), several = explain_claim(db.sql(), 500, "{noop,mail,held}");
  ASSERT_EQ(one.claimed, 10) << one.plan;
  ASSERT_EQ(several.claimed, 20) << several.plan;
  add_backlog(50000);
  ClaimCost one_after = explain_claim(db.sql(), 500), several_after = explain_claim(db.sql(), 500, "{noop,mail,held}");
  ASSERT_EQ(one_after.claimed, 10) << one_after.plan;
  ASSERT_EQ(several_after.claimed, 20) << several_after.plan;
  // Ten times the backlog: at most a level more in each index (stepping over it read thousands).
  EXPECT_LE(one_after.buffers, one.buffers * 3 / 2) << "before:\n" << one.plan << "after:\n" << one_after.plan;
  EXPECT_LE(several_after.buffers, several.buffers * 3 / 2)
      << "before:\n" << several.plan << "after:\n" << several_after.plan;
}

// The store's statements run with JIT off (pg::set_local). The generic plan of a claim of ten
// kinds or more is estimated above the default jit_above_cost, and compiling it took 0.23 s a
// claim at ten kinds and 24 s at a hundred (docs/performance.md): the settings the store sends
// with the claim must keep JIT off whatever the server's own say.
TEST_F(StoreTest, TheClaimOfManyKindsRunsWithoutJitWhateverTheServerSays) {
  if (db.scalar("SELECT pg_jit_available()::int") == 0) GTEST_SKIP() << "this server has no JIT";
  std::string kinds = "{";
  for (int k = 0; k < 10; ++k) {
    db.insert_due(2, "k" + std::to_string(k));
    kinds += (k ? ",k" : "k") + std::to_string(k);
  }
  kinds += "}";
  const pg::Statement& claim = pg::claim_statement(10);
  auto plan = [&](bool store_settings) {
    pqxx::work tx(db.sql());
    tx.exec("SET LOCAL jit = on; SET LOCAL jit_above_cost = 0");  // a server that compiles everything
    if (store_settings) tx.exec(pg::set_local(QueryTimeouts{}, claim.hash_by_id, claim.generic_plan));
    std::string sql = pg::inline_params(claim.sql, {tx.quote(kinds), "100", "'w1'", "60000", "1048576", "'{}'", "'{}'"});
    std::string out;  // with costs: EXPLAIN prints its "JIT:" summary only then
    for (const auto& row : tx.exec("EXPLAIN (ANALYZE) " + sql)) out += row[0].as<std::string>() + "\n";
    tx.abort();
    return out;
  };
  std::string compiled = plan(false), ours = plan(true);
  ASSERT_NE(compiled.find("JIT:"), std::string::npos) << "the server compiled nothing without the store's settings:\n"
                                                      << compiled;
  EXPECT_EQ(ours.find("JIT:"), std::string::npos) << ours;
  // It ran, and claimed every due task (the top node's rows).
  EXPECT_NE(ours.substr(0, ours.find('\n')).find(" rows=20 loops=1)"), std::string::npos) << ours;
}

// `status` on a large table reads estimates and counts due tasks only up to a cap, instead of
// scanning every row; on a small one (the test above and below) it counts exactly.
TEST_F(StoreTest, StatusOnALargeTableEstimatesAndCapsInsteadOfScanning) {
  db.exec("INSERT INTO agentcron.agent_tasks (kind, scheduled_for) "
          "SELECT 'noop', now() + interval '1 hour' FROM generate_series(1, 120000)");
  db.exec("INSERT INTO agentcron.agent_tasks (kind, scheduled_for) "
          "SELECT 'noop', now() - interval '1 minute' FROM generate_series(1, 10050)");
  db.exec("INSERT INTO agentcron.agent_tasks (kind, status, finished_at) "
          "SELECT 'noop', 'succeeded', now() FROM generate_series(1, 30000)");
  db.exec("VACUUM ANALYZE agentcron.agent_tasks");
  QueueStatus s = store->status();
  EXPECT_TRUE(s.estimated);
  ASSERT_EQ(s.by_status.size(), 5u);
  EXPECT_NEAR(static_cast<double>(s.by_status[0].second), 130050.0, 13005.0);  // pending, within 10 %
  EXPECT_EQ(s.by_status[1].second, 0);                                         // running: counted
  EXPECT_NEAR(static_cast<double>(s.by_status[2].second), 30000.0, 3000.0);    // succeeded
  EXPECT_EQ(s.due_now, 10000);
  EXPECT_TRUE(s.due_capped);
  ASSERT_TRUE(s.oldest_due_seconds);
  EXPECT_GE(*s.oldest_due_seconds, 50.0);
}

// Whatever the mix of priorities and times, a claim takes exactly the first due tasks in
// (priority DESC, scheduled_for, id) order — the order the skip over priorities must keep.
TEST_F(StoreTest, ClaimsTakeTheDueTasksInExactPriorityThenTimeOrder) {
  db.exec("SELECT setseed(0.42)");
  db.exec("INSERT INTO agentcron.agent_tasks (kind, priority, scheduled_for) "
          "SELECT 'noop', (floor(random() * 7) - 3)::smallint, "
          "       now() + (floor(random() * 40) - 30) * interval '1 minute' FROM generate_series(1, 400) g");
  db.exec("ANALYZE agentcron.agent_tasks");
  for (int round = 0; round < 20; ++round) {
    std::vector<std::int64_t> expected;
    {
      pqxx::nontransaction tx(db.sql());
      for (const auto& row : tx.exec("SELECT id FROM agentcron.agent_tasks WHERE status = 'pending' AND scheduled_for <= now() "
                                     "ORDER BY priority DESC, scheduled_for, id LIMIT 17"))
        expected.push_back(row[0].as<std::int64_t>());
    }
    std::vector<std::int64_t> got;
    for (const Task& t : store->claim_due(ClaimParams{17, {"noop"}, "w1", 60s})) got.push_back(t.id);
    std::sort(expected.begin(), expected.end());
    std::sort(got.begin(), got.end());
    ASSERT_EQ(got, expected) << "round " << round;
    if (got.empty()) break;
  }
  EXPECT_EQ(db.scalar("SELECT count(*) FROM agentcron.agent_tasks WHERE status = 'pending' AND scheduled_for <= now()"), 0);
}

// Several kinds are merged in that order too, whatever their mix, and kinds not asked for,
// paused or unapproved stay: the statements for two and for three kinds (four slots, one empty).
TEST_F(StoreTest, ClaimsOfSeveralKindsMergeThemInExactDueOrder) {
  db.exec("SELECT setseed(0.17)");
  db.exec("INSERT INTO agentcron.agent_tasks (kind, priority, scheduled_for, approval) "
          "SELECT (ARRAY['noop','mail','chat','held'])[1 + floor(random() * 4)::int], (floor(random() * 3) - 1)::smallint, "
          "       now() + (floor(random() * 40) - 30) * interval '1 minute', "
          "       CASE WHEN random() < 0.1 THEN 'pending' ELSE 'approved' END FROM generate_series(1, 600) g");
  db.exec("INSERT INTO agentcron.paused_kinds (kind) VALUES ('held')");
  db.exec("ANALYZE agentcron.agent_tasks");
  for (const std::vector<std::string>& kinds : {std::vector<std::string>{"noop", "mail"},
                                                std::vector<std::string>{"mail", "held", "chat"}}) {
    std::string in = sql_list(kinds);
    for (int round = 0; round < 40; ++round) {
      std::vector<std::int64_t> expected, got;
      {
        pqxx::nontransaction tx(db.sql());
        for (const auto& row : tx.exec("SELECT id FROM agentcron.agent_tasks WHERE status = 'pending' AND approval = 'approved' "
                                       "AND scheduled_for <= now() AND kind IN (" + in + ") AND kind <> 'held' "
                                       "ORDER BY priority DESC, scheduled_for, id LIMIT 13"))
          expected.push_back(row[0].as<std::int64_t>());
      }
      for (const Task& t : store->claim_due(ClaimParams{13, kinds, "w1", 60s})) got.push_back(t.id);
      std::sort(expected.begin(), expected.end());
      std::sort(got.begin(), got.end());
      ASSERT_EQ(got, expected) << in << ", round " << round;
      if (got.empty()) break;
    }
  }
  EXPECT_EQ(db.scalar("SELECT count(*) FROM agentcron.agent_tasks WHERE status = 'pending' AND approval = 'approved' "
                      "AND scheduled_for <= now() AND kind IN ('noop', 'mail', 'chat')"), 0);
  EXPECT_GT(db.scalar("SELECT count(*) FROM agentcron.agent_tasks WHERE status = 'pending' AND approval = 'approved' "
                      "AND scheduled_for <= now() AND kind = 'held'"), 0);
}

// A claim of several kinds counts each kind's share from its snapshot, which cannot see the rows
// another claim holds: the kind whose rows are held, at a higher priority and at the same one,
// must not leave the claim short while another kind has due rows (a short claim tells the poller
// nothing more is due), and the rows taken instead are the next in due order.
TEST_F(StoreTest, AClaimOfSeveralKindsTakesAnotherKindsRowsWhenTheFirstKindsAreHeld) {
  db.exec("INSERT INTO agentcron.agent_tasks (kind, priority, scheduled_for) SELECT 'held', (g % 2 * 5)::smallint, "
          "now() - interval '1 hour' FROM generate_series(1, 20) g");  // ten at priority 5, ten at 0
  db.exec("INSERT INTO agentcron.agent_tasks (kind, scheduled_for) SELECT 'mail', now() - interval '1 minute' "
          "FROM generate_series(1, 100)");
  db.exec("INSERT INTO agentcron.agent_tasks (kind, priority, scheduled_for) SELECT 'mail', -1, now() - interval '2 hours' "
          "FROM generate_series(1, 50)");
  db.exec("ANALYZE agentcron.agent_tasks");
  pqxx::connection other(db.url());
  pqxx::work holding(other);
  holding.exec("SELECT id FROM agentcron.agent_tasks WHERE kind = 'held' FOR UPDATE");
  std::vector<Task> tasks = store->claim_due(ClaimParams{20, {"held", "mail"}, "w1", 60s});
  ASSERT_EQ(tasks.size(), 20u);
  for (const Task& t : tasks) EXPECT_EQ(t.kind, "mail");
  holding.abort();
  EXPECT_EQ(db.scalar("SELECT count(*) FROM agentcron.agent_tasks WHERE status = 'running' AND priority = -1"), 0)
      << "a lower priority was taken while priority 0 had due rows";
}

// A queue table's statistics are stale by nature: ANALYZE saw every task pending, and now a
// thousand are running. The statements that write a batch of tasks back by id must still reach
// them through the primary key — not through the lease index (walking every running task per
// batch row made a 500-task completion 15× slower) and not by a sequential scan. Checked with the
// server's own scan counters, for prepared statements (custom then generic plans) and for the
// inlined statements of pgbouncer mode.
class StaleStatisticsTest : public StoreTest, public ::testing::WithParamInterface<bool> {
 protected:
  struct Scans {
    std::int64_t updated, seq, lease, pkey;
  };
  Scans scans() {
    pqxx::nontransaction tx(db.sql());
    auto r = tx.exec1(
        "SELECT n_tup_upd, seq_scan, "
        "(SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = 'agent_tasks_lease_idx'), "
        "(SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = 'agent_tasks_pkey') "
        "FROM pg_stat_user_tables WHERE relid = 'agentcron.agent_tasks'::regclass");
    return {r[0].as<std::int64_t>(), r[1].as<std::int64_t>(), r[2].as<std::int64_t>(), r[3].as<std::int64_t>()};
  }
  // A backend reports its counters when it exits (idle, only every ten seconds): close the store's
  // connections, then wait until `updated` rows show — the scans of the same statements with them.
  Scans scans_after(std::int64_t updated) {
    open(config);
    Scans s{};
    EXPECT_TRUE(testing::eventually([&] {
      s = scans();
      return s.updated >= updated;
    })) << "the server never reported " << updated << " updated rows, only " << s.updated;
    return s;
  }
};

TEST_P(StaleStatisticsTest, BatchWritesReachTasksThroughThePrimaryKey) {
  config.database.pgbouncer = GetParam();
  open(config);
  db.insert_due(30000);  // big enough that scanning it all is never the cheaper plan
  db.exec("VACUUM ANALYZE agentcron.agent_tasks");
  // More than five executions of each statement: generic plans too. Every other batch carries a
  // result, which takes it from the lean success statement (kSucceed) to the full one (kComplete).
  constexpr int kBatches = 12, kBatch = 125;
  std::vector<std::vector<Completion>> batches;
  for (int b = 0; b < kBatches; ++b) {
    std::vector<Completion> cs;
    for (const auto& t : store->claim_due(claim(kBatch))) {
      Completion c;
      c.id = t.id;
      c.claim_token = t.claim_token;
      c.attempt = t.attempt;
      cs.push_back(c);
    }
    ASSERT_EQ(cs.size(), static_cast<std::size_t>(kBatch));
    if (b % 2) cs[0].result = "{}";
    batches.push_back(std::move(cs));
  }
  Scans before = scans_after(kBatches * kBatch);

  std::int64_t written = 0;
  for (const auto& cs : batches) {
    std::vector<ClaimRef> claims;
    for (const auto& c : cs) claims.push_back({c.id, c.claim_token});
    written += static_cast<std::int64_t>(store->extend_leases(claims, "w1", 120s).size());
    written += static_cast<std::int64_t>(store->complete_many(cs, "w1").size());
  }
  EXPECT_EQ(written, 2 * kBatches * kBatch);
  Scans after = scans_after(before.updated + written);
  EXPECT_EQ(after.seq - before.seq, 0) << "a batch write scanned the whole table";
  EXPECT_EQ(after.lease - before.lease, 0) << "a batch write walked the running tasks";
  EXPECT_GE(after.pkey - before.pkey, 2 * kBatches);
  EXPECT_EQ(db.scalar("SELECT count(*) FROM agentcron.agent_tasks WHERE status = 'succeeded'"), kBatches * kBatch);
}

INSTANTIATE_TEST_SUITE_P(PreparedAndInlined, StaleStatisticsTest, ::testing::Bool(),
                         [](const auto& param_info) { return param_info.param ? "pgbouncer_mode" : "prepared"; });
// With one kind the claim locks one range of the due index as it reads it; with several, each
// kind's range up to its share of the first rows in due order (pg_statements.hpp). Both must
// hand each task to one claimer only, and each claimer must get some: a claim that merged the
// unlocked ranges and locked after came back empty against a faster claimer.
class ConcurrentClaimTest : public StoreTest, public ::testing::WithParamInterface<std::vector<std::string>> {};

TEST_P(ConcurrentClaimTest, TwoThreadsClaimingTenThousandTasksNeverGetTheSameOne) {
  const std::vector<std::string>& kinds = GetParam();
  db.exec("INSERT INTO agentcron.agent_tasks (kind, scheduled_for) SELECT (ARRAY[" + sql_list(kinds) + "])[1 + g % " +
          std::to_string(kinds.size()) + "], now() - interval '1 minute' FROM generate_series(0, 9999) g");
  std::vector<std::int64_t> a, b;
  auto worker = [&](std::vector<std::int64_t>& out, std::string name) {
    ConnectionPool p(PoolOptions::from_config(config, name), log);
    PgTaskStore s(p, StoreOptions::from_config(config), log);
    while (true) {
      auto tasks = s.claim_due(claim(100, name, kinds));
      if (tasks.empty()) break;
      for (auto& t : tasks) out.push_back(t.id);
    }
  };
  std::thread ta(worker, std::ref(a), "wa"), tb(worker, std::ref(b), "wb");
  ta.join();
  tb.join();
  std::set<std::int64_t> all(a.begin(), a.end());
  all.insert(b.begin(), b.end());
  EXPECT_EQ(a.size() + b.size(), 10000u);
  EXPECT_EQ(all.size(), 10000u);  // no task twice
  EXPECT_GT(a.size(), 0u);
  EXPECT_GT(b.size(), 0u);
  EXPECT_EQ(db.scalar("SELECT count(*) FROM agentcron.agent_tasks WHERE attempts = 1 AND status = 'running'"), 10000);
}

INSTANTIATE_TEST_SUITE_P(Kinds, ConcurrentClaimTest,
                         ::testing::Values(std::vector<std::string>{"noop"}, std::vector<std::string>{"noop", "mail", "chat"}),
                         [](const auto& kinds) { return kinds.param.size() == 1 ? "OneKind" : "ThreeKinds"; });

TEST_F(StoreTest, CompleteManyWritesEveryKindOfOutcomeInOneStatement) {
  db.insert_due(4);
  db.exec("INSERT INTO agentcron.agent_tasks (kind, cron) VALUES ('noop', '*/5 * * * *')");
  auto tasks = store->claim_due(claim(10));
  ASSERT_EQ(tasks.size(), 5u);
  std::sort(tasks.begin(), tasks.end(), [](const Task& a, const Task& b) { return a.id < b.id; });
  auto now = std::chrono::system_clock::now();
  std::vector<Completion> cs(5);
  for (int i = 0; i < 5; ++i) {
    cs[i].id = i + 1;
    cs[i].claim_token = tasks[i].claim_token;
    cs[i].attempt = 1;
    cs[i].started_at = now - 1s;
    cs[i].finished_at = now;
  }
  cs[0].status = Completion::Status::succeeded;
  cs[1].status = Completion::Status::pending;
  cs[1].retry_delay = 30s;
  cs[1].error = "try later";
  cs[1].run_outcome = "retry";
  cs[2].status = Completion::Status::failed;
  cs[2].error = "it's broken \"badly\"";
  cs[2].run_outcome = "failed";
  cs[3].status = Completion::Status::succeeded;
  cs[3].notify_channel = "agentcron_ready";
  cs[3].notify_payload = "{\"task_id\":4}";
  cs[4].status = Completion::Status::pending;
  cs[4].run_at = now + 300s;
  cs[4].reset_attempts = true;
  cs[4].run_outcome = "succeeded";
  // The notification arrives only after the completing transaction commits.
  pqxx::connection listener(db.conninfo());
  struct Receiver : pqxx::notification_receiver {
    using pqxx::notification_receiver::notification_receiver;
    void operator()(const std::string& payload, int) override { got = payload; }
    std::string got;
  } receiver(listener, "agentcron_ready");
  EXPECT_EQ(store->complete_many(cs, "w1").size(), 5u);
  listener.await_notification(5, 0);
  EXPECT_EQ(receiver.got, "{\"task_id\":4}");
  EXPECT_EQ(db.text("SELECT status || ',' || attempts || ',' || (finished_at IS NOT NULL) FROM agentcron.agent_tasks WHERE id = 1"), "succeeded,1,true");
  EXPECT_EQ(db.text("SELECT status || ',' || last_error FROM agentcron.agent_tasks WHERE id = 2"), "pending,try later");
  EXPECT_EQ(db.scalar("SELECT count(*) FROM agentcron.agent_tasks WHERE id = 2 AND scheduled_for > now() + interval '25 s'"), 1);
  EXPECT_EQ(db.text("SELECT status || ',' || last_error FROM agentcron.agent_tasks WHERE id = 3"), "failed,it's broken \"badly\"");
  EXPECT_EQ(db.text("SELECT status || ',' || attempts || ',' || (locked_by IS NULL) FROM agentcron.agent_tasks WHERE id = 5"), "pending,0,true");
  // Runs: one per failed attempt and per run of a recurring task; none for a one-off success.
  EXPECT_EQ(db.text("SELECT string_agg(task_id || ':' || outcome, ' ' ORDER BY task_id) FROM agentcron.task_runs"),
            "2:retry 3:failed 5:succeeded");
  EXPECT_EQ(db.scalar("SELECT count(*) FROM agentcron.task_runs WHERE worker = 'w1' AND started_at < finished_at"), 3);
}

// A batch of nothing but one-off successes goes through the lean statement (kSucceed); it must
// leave each row exactly as the full statement leaves a success in a mixed batch, and keep the
// same guards (worker, claim token).
TEST_F(StoreTest, ABatchOfPlainSuccessesLeavesTheRowsAsTheFullStatementDoes) {
  db.insert_due(5);
  // An earlier attempt's error and result, which a success clears.
  db.exec("UPDATE agentcron.agent_tasks SET last_error = 'earlier', result = 'old', attempts = 1");
  auto tasks = store->claim_due(claim(5));
  ASSERT_EQ(tasks.size(), 5u);
  std::sort(tasks.begin(), tasks.end(), [](const Task& a, const Task& b) { return a.id < b.id; });
  auto success = [&](std::size_t i) {
    Completion c;
    c.id = tasks[i].id;
    c.claim_token = tasks[i].claim_token;
    c.attempt = tasks[i].attempt;
    c.started_at = c.finished_at = std::chrono::system_clock::now();
    return c;
  };
  Completion stale = success(2);
  stale.claim_token += 1000;  // another claim's outcome: changes nothing
  auto done = store->complete_many({success(0), success(1), stale}, "w1");
  std::sort(done.begin(), done.end());
  EXPECT_EQ(done, (std::vector<std::int64_t>{tasks[0].id, tasks[1].id}));
  EXPECT_TRUE(store->complete_many({success(2)}, "w2").empty());  // another worker's: nothing either
  Completion with_result = success(4);
  with_result.result = "{\"ok\":true}";
  EXPECT_EQ(store->complete_many({success(3), with_result}, "w1").size(), 2u);  // the full statement
  auto row = [&](std::int64_t id) {
    return db.text("SELECT concat_ws(',', status, attempts, coalesce(last_error, '-'), coalesce(result, '-'), "
                   "coalesce(locked_by, '-'), locked_until IS NULL, finished_at IS NOT NULL, updated_at >= coalesce(finished_at, 'infinity')) "
                   "FROM agentcron.agent_tasks WHERE id = " + std::to_string(id));
  };
  EXPECT_EQ(row(tasks[0].id), "succeeded,2,-,-,-,t,t,t");
  EXPECT_EQ(row(tasks[0].id), row(tasks[3].id));  // lean and full agree
  EXPECT_EQ(row(tasks[2].id), "running,2,earlier,old,w1,f,f,f");
  EXPECT_EQ(db.scalar("SELECT count(*) FROM agentcron.task_runs"), 0);
  EXPECT_EQ(db.text("SELECT result FROM agentcron.agent_tasks WHERE id = " + std::to_string(tasks[4].id)), "{\"ok\":true}");
}

TEST_F(StoreTest, CompleteIgnoresATaskNoLongerLeasedByThisWorker) {
  db.insert_due(2);
  auto tasks = store->claim_due(claim(2));
  std::sort(tasks.begin(), tasks.end(), [](const Task& a, const Task& b) { return a.id < b.id; });
  // Task 2 was rescued and claimed again by another worker meanwhile.
  db.exec("UPDATE agentcron.agent_tasks SET locked_by = 'w2', attempts = 2, "
          "claim_token = nextval('agentcron.claim_tokens') WHERE id = 2");
  std::vector<Completion> cs(2);
  cs[0].id = 1;
  cs[0].claim_token = tasks[0].claim_token;
  cs[0].attempt = 1;
  cs[1].id = 2;
  cs[1].claim_token = tasks[1].claim_token;
  cs[1].attempt = 1;
  auto with_result = cs;  // the full statement (kComplete), not the lean one, keeps the guard too
  with_result[1].result = "{}";
  EXPECT_TRUE(store->complete_many({with_result[1]}, "w1").empty());
  EXPECT_EQ(store->complete_many(cs, "w1").size(), 1u);
  EXPECT_EQ(db.text("SELECT status FROM agentcron.agent_tasks WHERE id = 2"), "running");
}

// A recurring task resets its attempts at every fire: its next occurrence, claimed by the same
// worker, runs at the same attempt number. An outcome of the last occurrence sent again (after a
// commit whose fate was unknown) must not finish this one: each claim has its own token.
TEST_F(StoreTest, AnOutcomeSentAgainCannotFinishTheNextOccurrenceOfARecurringTask) {
  db.exec("INSERT INTO agentcron.agent_tasks (kind, cron) VALUES ('noop', '* * * * * *')");
  auto first = store->claim_due(claim(1));
  ASSERT_EQ(first.size(), 1u);
  Completion done;
  done.id = first[0].id;
  done.claim_token = first[0].claim_token;
  done.attempt = first[0].attempt;
  done.status = Completion::Status::pending;
  done.run_at = std::chrono::system_clock::now() - 1s;  // the next occurrence is due at once
  done.reset_attempts = true;
  done.run_outcome = "succeeded";
  ASSERT_EQ(store->complete_many({done}, "w1").size(), 1u);
  auto second = store->claim_due(claim(1));
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(second[0].attempt, first[0].attempt);          // same worker, same attempt …
  EXPECT_NE(second[0].claim_token, first[0].claim_token);  // … another claim
  EXPECT_TRUE(store->complete_many({done}, "w1").empty());    // the resent outcome changes nothing
  EXPECT_TRUE(store->extend_leases({first[0].claim()}, "w1", 120s).empty());
  EXPECT_EQ(store->release_many({first[0].claim()}, "w1", "shutdown"), 0);
  EXPECT_EQ(db.text("SELECT status || ',' || claim_token FROM agentcron.agent_tasks"),
            "running," + std::to_string(second[0].claim_token));
  EXPECT_EQ(db.scalar("SELECT count(*) FROM agentcron.task_runs"), 1);
}

TEST_F(StoreTest, ReleaseReturnsTasksWithoutCountingTheAttempt) {
  db.insert_due(3);
  auto tasks = store->claim_due(claim(3));
  std::sort(tasks.begin(), tasks.end(), [](const Task& a, const Task& b) { return a.id < b.id; });
  EXPECT_EQ(store->release_many({tasks[0].claim(), tasks[1].claim()}, "w1", "shutdown"), 2);
  EXPECT_EQ(store->release_many({tasks[2].claim()}, "someone-else", "shutdown"), 0);
  EXPECT_EQ(store->release_many({{tasks[2].id, tasks[2].claim_token + 1}}, "w1", "shutdown"), 0);  // another claim
  EXPECT_EQ(db.scalar("SELECT count(*) FROM agentcron.agent_tasks WHERE status = 'pending' AND attempts = 0 AND locked_by IS NULL"), 2);
}

TEST_F(StoreTest, ExtendLeasesMovesOnlyOurRunningTasks) {
  db.insert_due(3);
  std::vector<ClaimRef> claims;
  for (const Task& t : store->claim_due(ClaimParams{3, {"noop"}, "w1", 5s})) claims.push_back(t.claim());
  db.exec("UPDATE agentcron.agent_tasks SET locked_by = 'w2' WHERE id = 3");
  EXPECT_EQ(store->extend_leases(claims, "w1", 120s).size(), 2u);
  EXPECT_EQ(db.scalar("SELECT count(*) FROM agentcron.agent_tasks WHERE locked_until > now() + interval '100 s'"), 2);
}

TEST_F(StoreTest, RescueReturnsExpiredLeasesAndFailsExhaustedOnes) {
  db.exec("INSERT INTO agentcron.agent_tasks (kind, max_attempts) VALUES ('noop', 5), ('noop', 1), ('noop', 5)");
  store->claim_due(claim(3, "dead-worker"));
  db.exec("UPDATE agentcron.agent_tasks SET locked_until = now() - interval '1 s' WHERE id IN (1, 2)");
  RescueResult r = store->rescue_expired(100);
  EXPECT_EQ(r.to_pending, 1);
  EXPECT_EQ(r.to_failed, 1);
  EXPECT_EQ(db.text("SELECT status || ',' || attempts FROM agentcron.agent_tasks WHERE id = 1"), "pending,1");
  EXPECT_EQ(db.text("SELECT status FROM agentcron.agent_tasks WHERE id = 2"), "failed");
  EXPECT_EQ(db.text("SELECT status FROM agentcron.agent_tasks WHERE id = 3"), "running");
  EXPECT_EQ(db.text("SELECT last_error FROM agentcron.agent_tasks WHERE id = 1"), "lease expired: worker dead-worker stopped renewing it");
  EXPECT_EQ(db.scalar("SELECT count(*) FROM agentcron.task_runs WHERE outcome = 'rescued' AND worker = 'dead-worker'"), 2);
}

TEST_F(StoreTest, DeleteFinishedHonoursRetentionInBatches) {
  db.exec(
      "INSERT INTO agentcron.agent_tasks (kind, status, finished_at) SELECT 'noop', 'succeeded', now() - interval '8 days' "
      "FROM generate_series(1, 30)");
  db.exec("INSERT INTO agentcron.agent_tasks (kind, status, finished_at) VALUES ('noop', 'succeeded', now()), "
          "('noop', 'failed', now() - interval '8 days'), ('noop', 'failed', now() - interval '31 days')");
  EXPECT_EQ(store->delete_finished(std::chrono::hours(24 * 7), std::chrono::hours(24 * 30), 20).tasks, 20);
  EXPECT_EQ(store->delete_finished(std::chrono::hours(24 * 7), std::chrono::hours(24 * 30), 20).tasks, 11);
  EXPECT_EQ(store->delete_finished(std::chrono::hours(24 * 7), std::chrono::hours(24 * 30), 20).tasks, 0);
  EXPECT_EQ(db.scalar("SELECT count(*) FROM agentcron.agent_tasks"), 2);
}

// A recurring task never finishes, so nothing of it is deleted with a task: its runs past the
// longer retention go by themselves. The janitor goes on while either kind of row fills a batch —
// it stopped after one batch of runs when no task was due for deletion, and a fleet of frequent
// schedules outgrew it (500 runs a round: 144,000 a day).
TEST_F(StoreTest, TheJanitorDeletesOldRunsOfRecurringTasksInBatchesUntilNoneIsLeft) {
  db.exec("INSERT INTO agentcron.agent_tasks (kind, cron, scheduled_for) VALUES ('noop', '*/5 * * * * *', now() + interval '5 s')");
  db.exec("INSERT INTO agentcron.task_runs (task_id, attempt, outcome, finished_at) "
          "SELECT 1, 1, 'succeeded', now() - interval '31 days' - i * interval '1 s' FROM generate_series(1, 45) i");
  db.exec("INSERT INTO agentcron.task_runs (task_id, attempt, outcome, finished_at) "
          "SELECT 1, 1, 'succeeded', now() - interval '29 days' FROM generate_series(1, 3)");
  FinishedDeleted first = store->delete_finished(std::chrono::hours(24 * 7), std::chrono::hours(24 * 30), 20);
  EXPECT_EQ(first.tasks, 0);
  EXPECT_EQ(first.runs, 20);
  JanitorResult r = Janitor({std::chrono::hours(24 * 7), std::chrono::hours(24 * 30), 20, 10}, *store, log).run_once();
  EXPECT_EQ(r.deleted, 0);
  EXPECT_EQ(r.runs_deleted, 25);
  EXPECT_EQ(r.batches, 2);  // 20, then 5: a batch not filled ends the round
  EXPECT_EQ(db.scalar("SELECT count(*) FROM agentcron.task_runs"), 3);  // within the retention
  EXPECT_EQ(db.scalar("SELECT count(*) FROM agentcron.agent_tasks"), 1);
}

// Enqueues that wait on another transaction's insert of the same dedup key see nothing once it
// commits (their snapshot predates it) and insert nothing (the key is taken): each must still
// report the one live task.
TEST_F(StoreTest, EnqueuesBlockedOnAnUncommittedTaskWithTheirDedupKeyReportIt) {
  config.database.connection_limit = 4;
  open(config);
  pqxx::connection other(db.conninfo());
  pqxx::work tx(other);
  std::int64_t id = tx.exec1("INSERT INTO agentcron.agent_tasks (kind, dedup_key) VALUES ('noop', 'K') RETURNING id")[0]
                        .as<std::int64_t>();
  EnqueueParams p;
  p.kind = "noop";
  p.dedup_key = "K";
  std::vector<std::future<EnqueueResult>> waiting;
  for (int i = 0; i < 3; ++i) waiting.push_back(std::async(std::launch::async, [&] { return store->enqueue(p); }));
  ASSERT_TRUE(testing::eventually([&] {
    return db.scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                     "AND wait_event_type = 'Lock' AND query LIKE '%agentcron_enqueue%'") == 3;
  }, 20s));
  tx.commit();
  for (auto& w : waiting) {
    EnqueueResult r = w.get();
    EXPECT_EQ(r.id, id);
    EXPECT_TRUE(r.deduplicated);
  }
  EXPECT_EQ(db.scalar("SELECT count(*) FROM agentcron.agent_tasks WHERE dedup_key = 'K'"), 1);
}

TEST_F(StoreTest, EnqueueWithDedupKeyAndStatus) {
  EnqueueParams p;
  p.kind = "noop";
  p.payload = "{\"x\":1}";
  p.dedup_key = "daily-report";
  EnqueueResult a = store->enqueue(p);
  EnqueueResult b = store->enqueue(p);
  EXPECT_FALSE(a.deduplicated);
  EXPECT_TRUE(b.deduplicated);
  EXPECT_EQ(a.id, b.id);
  p.dedup_key.reset();
  p.in = 1h;
  store->enqueue(p);
  QueueStatus s = store->status();
  EXPECT_EQ(s.by_status[0].second, 2);  // pending
  EXPECT_EQ(s.due_now, 1);
  ASSERT_TRUE(s.oldest_due_seconds);
  EXPECT_GE(*s.oldest_due_seconds, 0.0);
  EXPECT_GE(s.agentcron_connections, 1);
  EXPECT_GT(s.max_connections, 0);
}

TEST_F(StoreTest, InsertingDueTasksNotifiesOncePerStatement) {
  pqxx::connection listener(db.conninfo());
  struct Counter : pqxx::notification_receiver {
    using pqxx::notification_receiver::notification_receiver;
    void operator()(const std::string&, int) override { ++n; }
    int n = 0;
  } counter(listener, "agentcron_due");
  db.insert_due(500);
  db.exec("INSERT INTO agentcron.agent_tasks (kind, scheduled_for) VALUES ('noop', now() + interval '1 hour')");
  ASSERT_TRUE(testing::eventually([&] {
    listener.get_notifs();
    return counter.n >= 1;
  }, 5s));
  listener.await_notification(0, 200000);
  EXPECT_EQ(counter.n, 1);  // 500 rows, one statement, one NOTIFY; the future task none
}

TEST_F(StoreTest, ReleasedAndRescuedTasksWakeListeningWorkers) {
  db.insert_due(4);
  auto tasks = store->claim_due(claim(4));
  ASSERT_EQ(tasks.size(), 4u);
  pqxx::connection listener(db.conninfo());
  struct Counter : pqxx::notification_receiver {
    using pqxx::notification_receiver::notification_receiver;
    void operator()(const std::string&, int) override { ++n; }
    int n = 0;
  } counter(listener, "agentcron_due");
  auto heard = [&](int n) {
    return testing::eventually([&] {
      listener.get_notifs();
      return counter.n >= n;
    }, 5s);
  };

  EXPECT_EQ(store->release_many({tasks[0].claim(), tasks[1].claim()}, "w1", "shutdown"), 2);
  EXPECT_TRUE(heard(1)) << "a release did not notify";
  EXPECT_EQ(store->release_many({tasks[0].claim()}, "w1", "shutdown"), 0);  // nothing released: silence

  db.exec("UPDATE agentcron.agent_tasks SET locked_until = now() - interval '1 s' WHERE id = " + std::to_string(tasks[2].id));
  EXPECT_EQ(store->rescue_expired(10).to_pending, 1);
  EXPECT_TRUE(heard(2)) << "a rescue did not notify";
  EXPECT_EQ(store->rescue_expired(10).to_pending, 0);
  listener.await_notification(0, 200000);
  EXPECT_EQ(counter.n, 2);  // one per statement that made tasks due; none for the empty ones
}

TEST_F(StoreTest, ClaimBlockedByALockFailsWithinTheLockTimeoutAndLeavesNothingIdleInTransaction) {
  Config c = config;
  c.timeouts.lock = 300ms;
  open(c);
  db.insert_due(5);
  db.insert_due(3, "b");
  db.insert_due(3, "c");
  // The claim of one kind and the claim of several (another statement, claim_statement(3)).
  for (const std::vector<std::string>& kinds : {std::vector<std::string>{"noop"}, {"noop", "b", "c"}}) {
    SCOPED_TRACE(kinds.size());
    pqxx::connection blocker(db.conninfo());
    pqxx::work hold(blocker);
    hold.exec("LOCK TABLE agentcron.agent_tasks IN ACCESS EXCLUSIVE MODE");
    auto start = std::chrono::steady_clock::now();
    try {
      store->claim_due(claim(5, "w1", kinds));
      ADD_FAILURE() << "claim went through a table lock";
    } catch (const DatabaseError& e) {
      EXPECT_EQ(e.sqlstate(), "55P03") << e.what();
      EXPECT_TRUE(e.is_transient());
    }
    EXPECT_LT(std::chrono::steady_clock::now() - start, 3s);
    hold.abort();
    EXPECT_EQ(store->claim_due(claim(5, "w1", kinds)).size(), 5u);  // the pool is healthy afterwards
    EXPECT_EQ(db.scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state LIKE 'idle in transaction%'"), 0);
  }
}

// Readiness asks the store whether the database takes its writes (TaskStore::answering): a
// write refused because the database cannot serve this worker (here its table is gone) turns it
// false until a write passes; a lock conflict and a read say nothing either way.
TEST_F(StoreTest, AnsweringFollowsTheLastWriteAndIgnoresLockConflictsAndReads) {
  Config c = config;
  c.timeouts.lock = 300ms;
  open(c);
  store->rescue_expired(10);
  EXPECT_TRUE(store->answering());
  db.exec("ALTER TABLE agentcron.agent_tasks RENAME TO agent_tasks_away");
  EXPECT_THROW(store->rescue_expired(10), DatabaseError);
  EXPECT_FALSE(store->answering());
  db.exec("ALTER TABLE agentcron.agent_tasks_away RENAME TO agent_tasks");
  EXPECT_NO_THROW(store->status());  // a read
  EXPECT_FALSE(store->answering());
  store->rescue_expired(10);
  EXPECT_TRUE(store->answering());
  pqxx::connection blocker(db.conninfo());
  pqxx::work hold(blocker);
  hold.exec("LOCK TABLE agentcron.agent_tasks IN ACCESS EXCLUSIVE MODE");
  try {
    store->rescue_expired(10);
    ADD_FAILURE() << "the rescue went through a table lock";
  } catch (const DatabaseError& e) {
    EXPECT_EQ(e.sqlstate(), "55P03") << e.what();
  }
  EXPECT_TRUE(store->answering());
  hold.abort();
}

TEST_F(StoreTest, StatementOutlivingItsTimeoutIsCancelledByTheServer) {
  Config c = config;
  c.timeouts.update = 300ms;
  open(c);
  // A slow trigger stands in for a slow query: pg_sleep far beyond the statement timeout.
  db.exec("CREATE FUNCTION agentcron.slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(30); RETURN NEW; END $$");
  db.exec("CREATE TRIGGER slow BEFORE INSERT ON agentcron.agent_tasks FOR EACH ROW EXECUTE FUNCTION agentcron.slow()");
  EnqueueParams p;
  p.kind = "noop";
  auto start = std::chrono::steady_clock::now();
  try {
    store->enqueue(p);
    FAIL() << "pg_sleep(30) finished under a 300ms statement timeout";
  } catch (const DatabaseError& e) {
    EXPECT_EQ(e.sqlstate(), "57014") << e.what();
    EXPECT_TRUE(e.is_transient());
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  db.exec("DROP TRIGGER slow ON agentcron.agent_tasks");
  EXPECT_GT(store->enqueue(p).id, 0);
  EXPECT_EQ(db.scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state LIKE 'idle in transaction%'"), 0);
}

}  // namespace
}  // namespace agentcron

namespace agentcron {
namespace {

TEST_F(StoreTest, AServerThatStopsAnsweringIsCutOffByTheClientAndTheConnectionDiscarded) {
  Config c = config;
  c.timeouts.claim = 200ms;
  open(c);
  // A tighter client grace than the default, so the test does not wait seconds.
  StoreOptions so = StoreOptions::from_config(c);
  so.client_grace = 300ms;
  store.reset();
  pool = std::make_unique<ConnectionPool>(PoolOptions::from_config(c, "w1"), log);
  store = std::make_unique<PgTaskStore>(*pool, so, log);
  store->now();  // opens the pooled connection
  std::int64_t backend = db.scalar("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'agentcron/w1'");
  // A backend that cannot answer at all: stopped. Only root may stop another user's process.
  if (::kill(static_cast<pid_t>(backend), SIGSTOP) != 0) GTEST_SKIP() << "cannot SIGSTOP the backend (needs root)";
  auto start = std::chrono::steady_clock::now();
  try {
    store->claim_due(claim(5));
    ADD_FAILURE() << "a stopped server answered";
  } catch (const DatabaseError& e) {
    EXPECT_TRUE(e.is_transient()) << e.what();
  }
  auto took = std::chrono::steady_clock::now() - start;
  ::kill(static_cast<pid_t>(backend), SIGCONT);
  EXPECT_GE(took, 200ms + 300ms);
  EXPECT_LT(took, 5s);
  EXPECT_NE(logs.str().find("closing the connection's socket"), std::string::npos) << logs.str();
  EXPECT_GE(pool->stats().discarded, 1u);
  // Resumed, the old backend still runs the claim waiting in its socket (a server that was only
  // slow does that too: leases and the rescuer are for it). Let it finish and notice its client
  // is gone before adding tasks a fresh connection must get.
  ASSERT_TRUE(testing::eventually(
      [&] { return db.scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = " + std::to_string(backend)) == 0; }));
  db.insert_due(2);
  EXPECT_EQ(store->claim_due(claim(5)).size(), 2u);  // a fresh connection works
}

}  // namespace
}  // namespace agentcron
