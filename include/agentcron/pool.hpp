// ConnectionPool: at most `limit` PostgreSQL connections for the whole process, lent one thread
// at a time through a move-only Lease; acquire() waits at most `acquire_timeout`.
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "agentcron/duration.hpp"
#include "agentcron/retry.hpp"

namespace agentcron {

class Logger;
class Connection;  // src/connection.hpp: a pqxx connection and its bookkeeping
struct Config;

struct PoolOptions {
  std::string conninfo;            // libpq key=value, Prisma params already stripped
  std::string redacted;            // the same for messages
  int limit = 4;                   // most connections open at once
  Millis acquire_timeout = std::chrono::seconds(10);
  Millis connect_timeout = std::chrono::seconds(5);
  Millis network_timeout = std::chrono::seconds(30);  // keepalives + tcp_user_timeout
  Millis max_lifetime = std::chrono::minutes(30);
  Millis idle_check_after = std::chrono::seconds(1);  // idle longer than this: check before reuse
  std::string application_name = "agentcron";        // the server sees <this>
  bool pgbouncer = false;

  static PoolOptions from_config(const Config& c, const std::string& worker_id);
};

struct PoolStats {
  int open = 0;
  int busy = 0;
  int idle = 0;
  int waiting = 0;
  std::uint64_t acquire_timeouts = 0;
  std::uint64_t acquired = 0;
  std::uint64_t discarded = 0;
  std::uint64_t opened_total = 0;
  Millis acquire_wait_total{0};
  Millis acquire_wait_max{0};
};

// The pool is exhausted: no connection freed up within acquire_timeout. Transient.
class PoolTimeout : public DatabaseError {
 public:
  explicit PoolTimeout(std::string m) : DatabaseError(std::move(m), "", ErrorClass::transient) {}
};

class ConnectionPool;

// A borrowed connection. Returns it to the pool on destruction; discard() drops it instead
// (after an error left it in doubt). Move-only; never share one between threads.
class Lease {
 public:
  Lease();
  Lease(Lease&& o) noexcept;
  Lease& operator=(Lease&& o) noexcept;
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;
  ~Lease();

  Connection& connection() const { return *conn_; }
  bool valid() const { return conn_ != nullptr; }
  void discard();   // close the connection instead of returning it
  void release();   // return it now

 private:
  friend class ConnectionPool;
  Lease(ConnectionPool* pool, std::unique_ptr<Connection> c);
  ConnectionPool* pool_ = nullptr;
  std::unique_ptr<Connection> conn_;
  bool discard_ = false;
};

class ConnectionPool {
 public:
  ConnectionPool(PoolOptions options, Logger& log);
  ~ConnectionPool();
  ConnectionPool(const ConnectionPool&) = delete;
  ConnectionPool& operator=(const ConnectionPool&) = delete;

  // A connection: an idle one (checked if it sat idle a while), else a new one when under the
  // limit, else the next one released — waiting at most acquire_timeout, then PoolTimeout.
  // Throws DatabaseError when connecting fails (transient for connection errors).
  Lease acquire();

  // Refuses new leases, waits until `deadline` for outstanding ones, closes every connection
  // (libpq sends Terminate). Idempotent.
  void close(std::chrono::steady_clock::time_point deadline);

  PoolStats stats() const;
  const PoolOptions& options() const { return options_; }

  // Cancels the query running on `c` from another thread and marks it for discarding. Used by
  // the statement watchdog when the server does not answer within its own timeout.
  void cancel(Connection& c);

 private:
  friend class Lease;
  void give_back(std::unique_ptr<Connection> c, bool discard);
  // Hands `c` out, counting the acquisition and its wait since `asked` (mu_ held).
  Lease lend_locked(std::unique_ptr<Connection> c, std::chrono::steady_clock::time_point asked);
  std::unique_ptr<Connection> open_connection();

  PoolOptions options_;
  Logger& log_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<Connection>> idle_;  // most recently used last
  int open_ = 0;       // idle + busy + being opened
  int waiting_ = 0;
  bool closed_ = false;
  PoolStats counters_;
};

}  // namespace agentcron
