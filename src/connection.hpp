// Connection: one libpqxx connection with what the pool and the task store keep about it (when
// it was opened and last used, which statements it has prepared, whether it is poisoned).
// Private to src/: only the pool and the task store see <pqxx/…>.
#pragma once
#include <pqxx/pqxx>

#include <atomic>
#include <chrono>
#include <memory>
#include <vector>
#include <set>
#include <string>

namespace agentcron {

class Connection {
 public:
  explicit Connection(const std::string& conninfo) : conn_(conninfo), quiet_(conn_) {}
  ~Connection() { listeners.clear(); }  // a receiver unregisters from its still-open connection
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  pqxx::connection& raw() { return conn_; }

  std::chrono::steady_clock::time_point opened_at = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point last_used = opened_at;
  std::set<std::string> prepared;           // statement names prepared on this connection
  std::atomic<bool> poisoned{false};         // cancelled or broken: never reuse
  std::vector<std::unique_ptr<pqxx::notification_receiver>> listeners;  // while this connection LISTENs

  // A cheap liveness check, no round trip: if the socket is readable while no query runs, the
  // server sent something (a termination notice) or closed it; consuming it tells which.
  bool looks_alive();

 private:
  pqxx::connection conn_;
  pqxx::quiet_errorhandler quiet_;  // server notices are not printed on stderr
};

}  // namespace agentcron
