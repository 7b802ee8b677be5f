// Migrator against a real, empty PostgreSQL database.
#include "agentcron/migrator.hpp"

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>

#include <sstream>
#include <thread>

#include "agentcron/log.hpp"
#include "agentcron/pool.hpp"
#include "agentcron/retry.hpp"
#include "agentcron/pg_task_store.hpp"
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

TEST(MigrationChecksum, IsStableAndSensitive) {
  EXPECT_EQ(migration_checksum("SELECT 1"), migration_checksum("SELECT 1"));
  EXPECT_NE(migration_checksum("SELECT 1"), migration_checksum("SELECT 2"));
  EXPECT_EQ(migration_checksum("").size(), 16u);
}

}  // namespace
}  // namespace agentcron
