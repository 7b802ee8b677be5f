// Migrator against a real, empty PostgreSQL database.
#include "agentcron/migrator.hpp"

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <pqxx/pqxx>

#include <chrono>
#include <sstream>
#include <thread>

#include "agentcron/log.hpp"
#include "agentcron/pool.hpp"
#include "agentcron/retry.hpp"
#include "agentcron/pg_task_store.hpp"
#include "support/migrations.hpp"
#include "support/test_db.hpp"

namespace agentcron {
namespace {

using testing::TestDatabase;

class MigratorTest : public ::testing::Test {
 protected:
  TestDatabase db{TestDatabase::Schema::empty};
  std::ostringstream logs;
  Logger log{LogFormat::text, LogLevel::info, std::make_shared<spdlog::sinks::ostream_sink_mt>(logs)};
  Config config = db.config();
};

TEST_F(MigratorTest, AppliesOnceThenIsANoOp) {
  ConnectionPool pool(PoolOptions::from_config(config, "m"), log);
  PgTaskStore store(pool, StoreOptions::from_config(config), log);
  Migrator m(store, log);
  ASSERT_FALSE(embedded_migrations().empty());
  EXPECT_FALSE(m.status().front().applied);
  EXPECT_EQ(m.migrate(), static_cast<int>(embedded_migrations().size()));
  EXPECT_EQ(m.migrate(), 0);
  EXPECT_TRUE(m.status().front().applied);
  EXPECT_EQ(db.scalar("SELECT count(*) FROM agentcron.schema_migrations"), static_cast<std::int64_t>(embedded_migrations().size()));
  EXPECT_EQ(db.scalar("SELECT count(*) FROM agentcron.agent_tasks"), 0);
}

TEST_F(MigratorTest, ConcurrentMigrationsBothSucceed) {
  std::atomic<int> applied{0}, failures{0};
  auto one = [&] {
    ConnectionPool pool(PoolOptions::from_config(config, "m"), log);
    PgTaskStore store(pool, StoreOptions::from_config(config), log);
    try {
      applied += Migrator(store, log).migrate();
    } catch (const DatabaseError& e) {
      ++failures;
      ADD_FAILURE() << e.what();
    }
  };
  std::thread a(one), b(one), c(one);
  a.join();
  b.join();
  c.join();
  EXPECT_EQ(failures, 0);
  EXPECT_EQ(applied, static_cast<int>(embedded_migrations().size()));  // each applied exactly once
  EXPECT_EQ(db.scalar("SELECT count(*) FROM agentcron.schema_migrations"), static_cast<std::int64_t>(embedded_migrations().size()));
}

TEST_F(MigratorTest, ChangedAppliedMigrationIsRefusedByName) {
  ConnectionPool pool(PoolOptions::from_config(config, "m"), log);
  PgTaskStore store(pool, StoreOptions::from_config(config), log);
  Migrator(store, log).migrate();
  std::vector<Migration> changed = embedded_migrations();
  std::string edited = std::string(changed[0].sql) + "\n-- edited after release\n";
  changed[0].sql = edited.c_str();
  std::vector<Migration> extra = changed;
  extra.push_back({9999, "later", "SELECT 1"});
  Migrator m(store, log, extra);
  try {
    m.migrate();
    FAIL() << "a changed migration was accepted";
  } catch (const DatabaseError& e) {
    EXPECT_NE(std::string(e.what()).find("migration 0001_init.sql has changed since it was applied"), std::string::npos)
        << e.what();
  }
  EXPECT_TRUE(m.status().front().changed);
  // Nothing after it ran.
  EXPECT_EQ(db.scalar("SELECT count(*) FROM agentcron.schema_migrations WHERE version = 9999"), 0);
}

// 0009 rebuilds the due index led by kind, 0010 the finished index led by status. On a large table
// an operator builds the new index beforehand with CREATE INDEX CONCURRENTLY (docs/operations.md):
// the migration must take that index over rather than build another, and must not keep one that a
// failed concurrent build left invalid, or an index of that name defined otherwise.
TEST_F(MigratorTest, AnIndexBuiltBeforehandIsTakenOverAndAnyOtherRebuilt) {
  struct Rebuild {
    int version;
    const char* index;     // the name it keeps
    const char* prebuilt;  // the name the operator builds it under
    const char* columns;   // and its definition
    const char* where;
    const char* printed;   // as pg_get_indexdef prints the right one
    const char* other;     // an index of the prebuilt name that is not the one
  };
  const Rebuild rebuilds[] = {
      {9, "agent_tasks_due_idx", "agent_tasks_kind_due_idx", "(kind, priority DESC, scheduled_for, id)",
       "WHERE status = 'pending' AND approval = 'approved'",
       "(kind, priority DESC, scheduled_for, id) WHERE ((status = 'pending'::text) AND (approval = 'approved'::text))",
       "(kind, priority DESC, scheduled_for, id)"},
      {10, "agent_tasks_finished_idx", "agent_tasks_finished_status_idx", "(status, finished_at)",
       "WHERE status IN ('succeeded', 'failed', 'cancelled')",
       "(status, finished_at) WHERE (status = ANY (ARRAY['succeeded'::text, 'failed'::text, 'cancelled'::text]))",
       "UNIQUE"},
  };
  auto index = [&](const std::string& name) {
    return db.text("SELECT coalesce((SELECT pg_get_indexdef(c.oid) || CASE WHEN i.indisvalid THEN '' ELSE ' INVALID' END "
                   "FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid "
                   "WHERE c.oid = to_regclass('agentcron." + name + "')), 'none')");
  };
  enum Case { valid, invalid, other };
  for (const Rebuild& r : rebuilds) {
    for (Case c : {valid, invalid, other}) {
      SCOPED_TRACE(std::string(r.prebuilt) + ": " +
                   (c == valid ? "a valid index built beforehand" : c == invalid ? "an invalid index left behind" : "another index of that name"));
      db.exec("DROP SCHEMA IF EXISTS agentcron CASCADE");
      ConnectionPool pool(PoolOptions::from_config(config, "m"), log);
      PgTaskStore store(pool, StoreOptions::from_config(config), log);
      Migrator(store, log, testing::migrations_before(r.version)).migrate();
      EXPECT_EQ(index(r.index).find(r.printed), std::string::npos);  // the old one
      db.insert_due(100);
      db.exec("INSERT INTO agentcron.agent_tasks (kind, status, finished_at) VALUES ('noop', 'failed', now())");
      std::string on = std::string(" ") + r.prebuilt + " ON agentcron.agent_tasks " + r.columns;
      if (c != other) db.exec("CREATE INDEX CONCURRENTLY" + on + " " + r.where);
      else if (std::string(r.other) == "UNIQUE") db.exec("CREATE UNIQUE INDEX" + on + " " + r.where);
      else db.exec(std::string("CREATE INDEX ") + r.prebuilt + " ON agentcron.agent_tasks " + r.other);
      if (c == invalid)
        db.exec(std::string("UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'agentcron.") + r.prebuilt + "'::regclass");
      std::int64_t oid = db.scalar(std::string("SELECT 'agentcron.") + r.prebuilt + "'::regclass::oid::bigint");
      EXPECT_EQ(Migrator(store, log).migrate(), static_cast<int>(embedded_migrations().size()) - (r.version - 1));
      std::string def = index(r.index);
      EXPECT_NE(def.find(r.printed), std::string::npos) << def;
      EXPECT_EQ(def.find("INVALID"), std::string::npos) << def;
      EXPECT_EQ(def.find("UNIQUE"), std::string::npos) << def;
      EXPECT_EQ(index(r.prebuilt), "none");
      // Taken over (the same index under the old name), or built afresh when it was not the one.
      EXPECT_EQ(db.scalar(std::string("SELECT 'agentcron.") + r.index + "'::regclass::oid::bigint") == oid, c == valid);
    }
  }
}

// 0009 takes the tasks table's exclusive lock, waiting at most 5 s for it: behind an application's
// long transaction it gives up, says which migration and why, leaves nothing half done (the old
// index serves claims meanwhile), and the same migrate passes once that transaction ends.
TEST_F(MigratorTest, TheKindLedDueIndexMigrationGivesUpOnALockItCannotHaveAndPassesLater) {
  ConnectionPool pool(PoolOptions::from_config(config, "m"), log);
  PgTaskStore store(pool, StoreOptions::from_config(config), log);
  Migrator(store, log, testing::migrations_before(9)).migrate();
  db.insert_due(10);
  const std::string old_index = db.text("SELECT pg_get_indexdef('agentcron.agent_tasks_due_idx'::regclass)");

  pqxx::connection app(db.conninfo());
  pqxx::work open(app);
  open.exec("SELECT count(*) FROM agentcron.agent_tasks");  // holds the table's share lock until it ends
  auto began = std::chrono::steady_clock::now();
  try {
    Migrator(store, log).migrate();
    FAIL() << "0009 took the table's lock while another transaction held it";
  } catch (const MigrationChanged& e) {
    FAIL() << e.what();
  } catch (const DatabaseError& e) {
    EXPECT_EQ(e.sqlstate(), "55P03") << e.what();
    std::string what = e.what();
    EXPECT_NE(what.find("migration 0009_kind_due_index.sql failed, nothing of it applied"), std::string::npos) << what;
    EXPECT_NE(what.find("lock timeout; another transaction holds a lock it needs: migrate again once that ends"),
              std::string::npos) << what;
  }
  // 0009's own lock_timeout (5 s), not the migrate's 2 minutes: a correctness bound, not a speed.
  EXPECT_LT(std::chrono::steady_clock::now() - began, std::chrono::seconds(60));
  EXPECT_EQ(db.scalar("SELECT count(*) FROM agentcron.schema_migrations WHERE version = 9"), 0);
  EXPECT_EQ(db.text("SELECT pg_get_indexdef('agentcron.agent_tasks_due_idx'::regclass)"), old_index);
  EXPECT_EQ(db.scalar("SELECT count(*) FROM pg_class WHERE oid = to_regclass('agentcron.agent_tasks_kind_due_idx')"), 0);
  // The pool's connection came back clean: the same store migrates once the transaction ends.
  open.commit();
  EXPECT_EQ(Migrator(store, log).migrate(), static_cast<int>(embedded_migrations().size()) - 8);
  EXPECT_NE(db.text("SELECT pg_get_indexdef('agentcron.agent_tasks_due_idx'::regclass)").find("(kind, priority DESC"),
            std::string::npos);
  EXPECT_EQ(db.scalar("SELECT count(*) FROM agentcron.agent_tasks WHERE status = 'pending'"), 10);
}

// A changed migration found under the migration lock (another migrate applied a different file
// in between) is refused inside the transaction: the connection goes back to the pool with the
// transaction and its advisory lock ended, not idle in a transaction that blocks every migrate.
TEST_F(MigratorTest, AMigrationRefusedInsideItsTransactionLeavesNoTransactionOrLockBehind) {
  ConnectionPool pool(PoolOptions::from_config(config, "m"), log);
  PgTaskStore store(pool, StoreOptions::from_config(config), log);
  Migrator(store, log).migrate();
  EXPECT_THROW(store.apply_migration(1, "init", "SELECT 1", "0000000000000000"), MigrationChanged);
  EXPECT_EQ(db.scalar("SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                      "WHERE l.locktype = 'advisory' AND d.datname = current_database()"),
            0);  // this test's database only: other tests run beside it on the cluster
  EXPECT_EQ(db.scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                      "AND state LIKE 'idle in transaction%'"),
            0);
  EXPECT_EQ(Migrator(store, log).migrate(), 0);  // the same pool's connection serves the next one
}

TEST(MigrationChecksum, IsStableAndSensitive) {
  EXPECT_EQ(migration_checksum("SELECT 1"), migration_checksum("SELECT 1"));
  EXPECT_NE(migration_checksum("SELECT 1"), migration_checksum("SELECT 2"));
  EXPECT_EQ(migration_checksum("").size(), 16u);
}

}  // namespace
}  // namespace agentcron
