// ConnectionPool against a real PostgreSQL: limits, timeouts, close, server-side kills.
#include "agentcron/pool.hpp"

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>

#include <latch>
#include <sstream>
#include <thread>

#include "agentcron/database_url.hpp"
#include "agentcron/log.hpp"
#include "agentcron/pg_task_store.hpp"
#include "support/test_db.hpp"

namespace agentcron {
namespace {

using namespace std::chrono_literals;
using testing::TestDatabase;

class PoolTest : public ::testing::Test {
 protected:
  TestDatabase db;
  std::ostringstream logs;
  Logger log{LogFormat::text, LogLevel::info, std::make_shared<spdlog::sinks::ostream_sink_mt>(logs)};
  std::string id = "pooltest-" + std::to_string(::getpid());

  PoolOptions options(int limit, Millis timeout = 1s) {
    Config c = db.config();
    c.database.connection_limit = limit;
    c.database.pool_timeout = timeout;
    return PoolOptions::from_config(c, id);
  }
  std::int64_t server_connections() {
    return db.scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'agentcron/" + id + "'");
  }
};

TEST_F(PoolTest, AcquireFailsAfterPoolTimeoutNamingTheNumbersAndAReleaseLetsTheNextIn) {
  ConnectionPool pool(options(2, 1s), log);
  Lease a = pool.acquire();
  Lease b = pool.acquire();
  auto start = std::chrono::steady_clock::now();
  try {
    pool.acquire();
    FAIL() << "third acquire succeeded";
  } catch (const PoolTimeout& e) {
    EXPECT_STREQ(e.what(), "pool timeout after 1s: 2 of 2 connections busy, 0 waiting");
    EXPECT_TRUE(e.is_transient());
  }
  EXPECT_GE(std::chrono::steady_clock::now() - start, 1s);
  EXPECT_EQ(pool.stats().acquire_timeouts, 1u);

  std::latch waiting(1);
  std::atomic<bool> got{false};
  std::thread waiter([&] {
    waiting.count_down();
    Lease c = pool.acquire();
    got = c.valid();
  });
  waiting.wait();
  ASSERT_TRUE(testing::eventually([&] { return pool.stats().waiting == 1; }));
  a.release();
  waiter.join();
  EXPECT_TRUE(got);
  EXPECT_EQ(pool.stats().open, 2);
}

TEST_F(PoolTest, ConnectionsAreLazyReusedAndCarryTheWorkerName) {
  ConnectionPool pool(options(4), log);
  EXPECT_EQ(pool.stats().open, 0);
  EXPECT_EQ(server_connections(), 0);
  { Lease a = pool.acquire(); }
  { Lease b = pool.acquire(); }
  EXPECT_EQ(pool.stats().open, 1);
  EXPECT_EQ(pool.stats().opened_total, 1u);
  EXPECT_EQ(server_connections(), 1);
}

TEST_F(PoolTest, CloseLeavesNoConnectionOnTheServer) {
  ConnectionPool pool(options(3), log);
  {
    Lease a = pool.acquire();
    Lease b = pool.acquire();
    Lease c = pool.acquire();
  }
  EXPECT_EQ(server_connections(), 3);
  pool.close(std::chrono::steady_clock::now() + 2s);
  ASSERT_TRUE(testing::eventually([&] { return server_connections() == 0; }));
  EXPECT_THROW(pool.acquire(), DatabaseError);
}

TEST_F(PoolTest, CloseWaitsForOutstandingLeases) {
  ConnectionPool pool(options(2), log);
  Lease a = pool.acquire();
  std::thread returner([&] {
    std::this_thread::sleep_for(100ms);  // the lease is in use a little longer
    a.release();
  });
  pool.close(std::chrono::steady_clock::now() + 5s);
  returner.join();
  EXPECT_EQ(pool.stats().open, 0);
  ASSERT_TRUE(testing::eventually([&] { return server_connections() == 0; }));
}

TEST_F(PoolTest, ConnectionKilledByTheServerIsReplacedAndARetriedOperationSucceeds) {
  Config c = db.config();
  c.database.connection_limit = 1;
  ConnectionPool pool(PoolOptions::from_config(c, id), log);
  PgTaskStore store(pool, StoreOptions::from_config(c), log);
  store.now();  // opens the one connection
  ASSERT_EQ(server_connections(), 1);
  db.exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'agentcron/" + id + "'");
  ASSERT_TRUE(testing::eventually([&] { return server_connections() == 0; }));
  // The idle check notices the dead connection before reuse; if the race goes the other way,
  // the operation fails as transient and its retry gets a fresh connection.
  SysTime t{};
  for (int attempt = 1; attempt <= 2; ++attempt) {
    try {
      t = store.now();
      break;
    } catch (const DatabaseError& e) {
      ASSERT_TRUE(e.is_transient()) << e.what();
      ASSERT_EQ(attempt, 1) << e.what();
    }
  }
  EXPECT_NE(t, SysTime{});
  EXPECT_GE(pool.stats().discarded, 1u);
  EXPECT_EQ(pool.stats().opened_total, 2u);
  EXPECT_EQ(server_connections(), 1);
}

TEST_F(PoolTest, UnreachableServerIsATransientErrorWithoutThePassword) {
  PoolOptions o = options(1);
  o.conninfo = "host=127.0.0.1 port=1 user=x password=hunter2 dbname=x";
  o.connect_timeout = 2s;
  ConnectionPool pool(o, log);
  try {
    pool.acquire();
    FAIL();
  } catch (const DatabaseError& e) {
    EXPECT_TRUE(e.is_transient());
    EXPECT_EQ(std::string(e.what()).find("hunter2"), std::string::npos) << e.what();
  }
  EXPECT_EQ(pool.stats().open, 0);
}

}  // namespace
}  // namespace agentcron
