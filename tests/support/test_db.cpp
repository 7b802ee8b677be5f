// The throwaway-database fixture (see test_db.hpp).
#include "support/test_db.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <random>
#include <stdexcept>
#include <thread>

namespace agentcron::testing {

std::string server_conninfo() {
  const char* s = std::getenv("AGENTCRON_TEST_PG");
  if (!s || !*s)
    throw std::runtime_error(
        "AGENTCRON_TEST_PG is not set: run the suite through `packaging/agentcron-dev test`, which starts PostgreSQL");
  return s;
}

std::string pg_ctl() {
  const char* s = std::getenv("AGENTCRON_TEST_PG_CTL");
  if (!s || !*s) throw std::runtime_error("AGENTCRON_TEST_PG_CTL is not set: run through packaging/agentcron-dev test");
  return s;
}

bool run_pg_ctl(const std::string& action) {
  return std::system((pg_ctl() + " " + action + " >/dev/null 2>&1").c_str()) == 0;
}

void ensure_cluster_running() {
  if (!run_pg_ctl("status")) run_pg_ctl("start");
}

TestDatabase::TestDatabase(Schema schema) {
  static std::atomic<int> counter{0};
  std::mt19937 rng{std::random_device{}()};
  name_ = "t_" + std::to_string(::getpid()) + "_" + std::to_string(counter++) + "_" + std::to_string(rng() % 100000);
  pqxx::connection admin(server_conninfo() + " dbname=postgres");
  pqxx::nontransaction tx(admin);
  tx.exec("CREATE DATABASE " + name_ + " TEMPLATE " +
          (schema == Schema::migrated ? std::string("agentcron_template") : std::string("template0")));
}

TestDatabase::~TestDatabase() {
  sql_.reset();
  try {
    pqxx::connection admin(server_conninfo() + " dbname=postgres");
    pqxx::nontransaction tx(admin);
    tx.exec("DROP DATABASE IF EXISTS " + name_ + " WITH (FORCE)");
  } catch (const std::exception& e) {
    ADD_FAILURE() << "dropping " << name_ << ": " << e.what();
  }
}

std::string TestDatabase::conninfo() const { return server_conninfo() + " dbname=" + name_; }

namespace {
// A value of the server's conninfo ("host=127.0.0.1 port=N user=agentcron").
std::string server_param(const std::string& key) {
  std::string s = server_conninfo();
  auto pos = s.find(key + "=");
  if (pos == std::string::npos) return std::string();
  auto end = s.find(' ', pos);
  return s.substr(pos + key.size() + 1, end == std::string::npos ? std::string::npos : end - pos - key.size() - 1);
}
}  // namespace

std::string TestDatabase::url() const {
  return "postgresql://" + server_param("user") + "@" + server_param("host") + ":" + server_param("port") + "/" + name_;
}

int TestDatabase::port() const { return std::stoi(server_param("port")); }

Config TestDatabase::config() const {
  Config c;
  c.database.url = url();
  c.database.pool_timeout = std::chrono::seconds(5);
  c.scheduler.schedule = "* * * * * *";
  c.retry.base_delay = std::chrono::milliseconds(50);
  c.retry.max_delay = std::chrono::milliseconds(200);
  c.shutdown.grace = std::chrono::seconds(5);
  c.scheduler.lease = std::chrono::seconds(10);
  c.metrics.listen = "";  // in-process workers of parallel tests would contend for 9464; a test opts in
  return c;
}

pqxx::connection& TestDatabase::sql() {
  if (!sql_) sql_ = std::make_unique<pqxx::connection>(conninfo() + " application_name=agentcron_test");
  return *sql_;
}

std::int64_t TestDatabase::scalar(const std::string& query) {
  pqxx::nontransaction tx(sql());
  return tx.exec1(query)[0].as<std::int64_t>();
}

std::string TestDatabase::text(const std::string& query) {
  pqxx::nontransaction tx(sql());
  auto r = tx.exec1(query);
  return r[0].is_null() ? "<null>" : r[0].as<std::string>();
}

void TestDatabase::exec(const std::string& query) {
  pqxx::nontransaction tx(sql());
  tx.exec(query);
}

void TestDatabase::insert_due(int n, const std::string& kind, const std::string& payload) {
  pqxx::nontransaction tx(sql());
  tx.exec_params("INSERT INTO agentcron.agent_tasks (kind, payload) SELECT $1, $2::jsonb FROM generate_series(1, $3)",
                 kind, payload, n);
}

bool eventually(const std::function<bool()>& cond, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (cond()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

}  // namespace agentcron::testing
