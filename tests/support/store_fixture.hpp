// StoreFixture: a test's own database with a connection pool and a task store on it, logging
// into `logs` — the setup the integration tests of the store's users share.
#pragma once
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>

#include <memory>
#include <sstream>

#include "agentcron/log.hpp"
#include "agentcron/pg_task_store.hpp"
#include "support/test_db.hpp"

namespace agentcron::testing {

class StoreFixture : public ::testing::Test {
 protected:
  TestDatabase db;
  std::ostringstream logs;
  Logger log{LogFormat::text, LogLevel::info, std::make_shared<spdlog::sinks::ostream_sink_mt>(logs)};
  Config config = db.config();
  ConnectionPool pool{PoolOptions::from_config(config, "w1"), log};
  PgTaskStore store{pool, StoreOptions::from_config(config), log};
};

}  // namespace agentcron::testing
