// TestDatabase: a database of its own for one test, copied from the migrated template that
// packaging/agentcron-dev test prepares (or empty, for migration tests), dropped afterwards.
#pragma once
#include <pqxx/pqxx>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

#include "agentcron/config.hpp"

namespace agentcron::testing {

class TestDatabase {
 public:
  enum class Schema { migrated, empty };
  explicit TestDatabase(Schema schema = Schema::migrated);
  ~TestDatabase();
  TestDatabase(const TestDatabase&) = delete;
  TestDatabase& operator=(const TestDatabase&) = delete;

  const std::string& name() const { return name_; }
  // libpq conninfo of this database (TCP on loopback).
  std::string conninfo() const;
  // postgresql:// URL of this database.
  std::string url() const;
  // The test cluster's TCP port.
  int port() const;
  // A Config pointing at this database, with test-friendly short timings.
  Config config() const;

  // Direct SQL for assertions (a connection of the test's own).
  pqxx::connection& sql();
  void reconnect() { sql_.reset(); }  // after a server restart
  std::int64_t scalar(const std::string& query);
  // The first column of the query's one row as text; "<null>" for NULL.
  std::string text(const std::string& query);
  void exec(const std::string& query);
  // Inserts `n` due tasks of `kind` in one statement.
  void insert_due(int n, const std::string& kind = "noop", const std::string& payload = "{}");

 private:
  std::string name_;
  std::unique_ptr<pqxx::connection> sql_;
};

// The server's conninfo without a database (host, port, user): from AGENTCRON_TEST_PG.
std::string server_conninfo();
// The pg_ctl command line for the test cluster (AGENTCRON_TEST_PG_CTL), for restarts.
std::string pg_ctl();
// Runs `pg_ctl <action>` ("-m fast restart", "start", …) on the test cluster; true when it worked.
bool run_pg_ctl(const std::string& action);
// Starts the test cluster if a test left it stopped, for the tests after it.
void ensure_cluster_running();

// Polls `cond` every few milliseconds until it holds or `timeout` passes; returns the last value.
bool eventually(const std::function<bool()>& cond, std::chrono::milliseconds timeout = std::chrono::seconds(20));

}  // namespace agentcron::testing
