// The connection pool (see pool.hpp). All changes of the counts happen under mu_; connecting
// and closing happen outside it, so one slow connect never blocks a release.
#include "agentcron/pool.hpp"

#include <poll.h>

#include <algorithm>

#include "agentcron/config.hpp"
#include "agentcron/database_url.hpp"
#include "agentcron/secrets.hpp"
#include "agentcron/log.hpp"
#include "connection.hpp"

namespace agentcron {
namespace {

std::int64_t whole_seconds_up(Millis d) { return std::max<std::int64_t>(1, (d.count() + 999) / 1000); }

std::string quote(const std::string& v) {
  std::string out = "'";
  for (char c : v) {
    if (c == '\'' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out + "'";
}

// A failed connect as a DatabaseError: authentication and unknown database are permanent,
// everything else (refused, timed out, too many connections, starting up) transient.
DatabaseError connect_error(const std::string& what) {
  std::string msg = what;
  while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
  for (auto& c : msg)
    if (c == '\n') c = ' ';
  if (msg.find("authentication failed") != std::string::npos)
    return DatabaseError("cannot connect: " + msg, "28P01", ErrorClass::permanent);
  if (msg.find("does not exist") != std::string::npos)
    return DatabaseError("cannot connect: " + msg, "3D000", ErrorClass::permanent);
  return DatabaseError("cannot connect: " + msg, "08001", ErrorClass::transient);
}

}  // namespace

bool Connection::looks_alive() {
  if (poisoned || !conn_.is_open()) return false;
  for (int round = 0; round < 2; ++round) {
    int fd = conn_.sock();
    if (fd < 0) return false;
    pollfd p{fd, POLLIN, 0};
    int r = ::poll(&p, 1, 0);
    if (r == 0) return true;  // nothing arrived while idle: alive as far as we can tell cheaply
    if (r < 0 || (p.revents & (POLLERR | POLLNVAL))) return false;
    try {
      conn_.get_notifs();  // consumes input; a closed socket shows up as broken_connection
    } catch (const pqxx::broken_connection&) {
      return false;
    }
    if (!conn_.is_open()) return false;
  }
  return conn_.is_open();
}

PoolOptions PoolOptions::from_config(const Config& c, const std::string& worker_id) {
  DatabaseUrl url = parse_database_url(c.database.url);
  PoolOptions o;
  o.conninfo = url.conninfo();
  o.redacted = url.redacted();
  for (const char* key : {"password", "sslpassword"})
    if (auto secret = url.get(key)) remember_secret(*secret);
  o.limit = c.database.connection_limit;
  o.acquire_timeout = c.database.pool_timeout;
  o.connect_timeout = c.database.connect_timeout;
  o.network_timeout = c.database.network_timeout;
  o.max_lifetime = c.database.max_lifetime;
  o.application_name = c.database.application_name + "/" + worker_id;
  o.pgbouncer = c.database.pgbouncer;
  return o;
}

Lease::Lease() = default;

Lease::Lease(ConnectionPool* pool, std::unique_ptr<Connection> c) : pool_(pool), conn_(std::move(c)) {}

Lease::Lease(Lease&& o) noexcept : pool_(o.pool_), conn_(std::move(o.conn_)), discard_(o.discard_) {
  o.pool_ = nullptr;
}

Lease& Lease::operator=(Lease&& o) noexcept {
  if (this != &o) {
    release();
    pool_ = o.pool_;
    conn_ = std::move(o.conn_);
    discard_ = o.discard_;
    o.pool_ = nullptr;
  }
  return *this;
}

Lease::~Lease() { release(); }

void Lease::discard() {
  discard_ = true;
  release();
}

void Lease::release() {
  if (pool_ && conn_) pool_->give_back(std::move(conn_), discard_);
  pool_ = nullptr;
  conn_.reset();
}

ConnectionPool::ConnectionPool(PoolOptions options, Logger& log) : options_(std::move(options)), log_(log) {}

ConnectionPool::~ConnectionPool() { close(std::chrono::steady_clock::now()); }

std::unique_ptr<Connection> ConnectionPool::open_connection() {
  const auto nt = options_.network_timeout;
  // A dead peer is noticed within network_timeout: keepalive probes start at a third of it, and
  // tcp_user_timeout bounds how long sent data may stay unacknowledged.
  std::string extra = " connect_timeout=" + std::to_string(whole_seconds_up(options_.connect_timeout)) +
                      " keepalives=1 keepalives_idle=" + std::to_string(whole_seconds_up(nt / 3)) +
                      " keepalives_interval=" + std::to_string(whole_seconds_up(nt / 9)) +
                      " keepalives_count=3 tcp_user_timeout=" + std::to_string(nt.count()) +
                      " application_name=" + quote(options_.application_name);
  try {
    auto c = std::make_unique<Connection>(options_.conninfo + extra);
    std::lock_guard lock(mu_);
    ++counters_.opened_total;
    return c;
  } catch (const pqxx::broken_connection& e) {
    throw connect_error(e.what());
  } catch (const pqxx::failure& e) {
    throw connect_error(e.what());
  }
}

Lease ConnectionPool::lend_locked(std::unique_ptr<Connection> c, std::chrono::steady_clock::time_point asked) {
  ++counters_.acquired;
  auto waited = std::chrono::duration_cast<Millis>(std::chrono::steady_clock::now() - asked);
  counters_.acquire_wait_total += waited;
  counters_.acquire_wait_max = std::max(counters_.acquire_wait_max, waited);
  return Lease(this, std::move(c));
}

Lease ConnectionPool::acquire() {
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + options_.acquire_timeout;
  std::unique_lock lock(mu_);
  bool counted_waiting = false;
  auto stop_waiting = [&] {
    if (counted_waiting) --waiting_;
    counted_waiting = false;
  };
  while (true) {
    if (closed_) {
      stop_waiting();
      // Not the database's word on any statement (08003: no connection): nothing may take it
      // as a refusal of the values it was asked to write.
      throw DatabaseError("connection pool is closed", "08003", ErrorClass::transient);
    }
    if (!idle_.empty()) {
      std::unique_ptr<Connection> c = std::move(idle_.back());
      idle_.pop_back();
      stop_waiting();
      auto now = std::chrono::steady_clock::now();
      bool too_old = now - c->opened_at > options_.max_lifetime;
      bool check = now - c->last_used > options_.idle_check_after;
      lock.unlock();
      if (too_old || (check && !c->looks_alive())) {
        if (!too_old) log_.info("pooled connection was closed by the server; replacing it");
        c.reset();  // closes it
        lock.lock();
        --open_;
        ++counters_.discarded;
        continue;  // the freed slot lets the next round open a fresh one
      }
      lock.lock();
      return lend_locked(std::move(c), start);
    }
    if (open_ < options_.limit) {
      ++open_;
      stop_waiting();
      lock.unlock();
      try {
        auto c = open_connection();
        lock.lock();
        return lend_locked(std::move(c), start);
      } catch (...) {
        // Not a swallow: the slot is given back and the error goes on to the caller.
        lock.lock();
        --open_;
        cv_.notify_one();
        throw;
      }
    }
    if (!counted_waiting) {
      ++waiting_;
      counted_waiting = true;
    }
    if (cv_.wait_until(lock, deadline) == std::cv_status::timeout && idle_.empty() &&
        (open_ >= options_.limit || closed_)) {
      int busy = open_ - static_cast<int>(idle_.size());
      int waiting_others = waiting_ - 1;
      stop_waiting();
      ++counters_.acquire_timeouts;
      throw PoolTimeout("pool timeout after " + format_duration(options_.acquire_timeout) + ": " +
                        std::to_string(busy) + " of " + std::to_string(options_.limit) + " connections busy, " +
                        std::to_string(waiting_others) + " waiting");
    }
  }
}

void ConnectionPool::give_back(std::unique_ptr<Connection> c, bool discard) {
  std::unique_lock lock(mu_);
  auto now = std::chrono::steady_clock::now();
  if (discard || closed_ || c->poisoned || !c->raw().is_open() || now - c->opened_at > options_.max_lifetime) {
    --open_;
    if (discard || c->poisoned) ++counters_.discarded;
    lock.unlock();
    cv_.notify_all();
    c.reset();  // PQfinish: the server sees a clean Terminate
    return;
  }
  c->last_used = now;
  idle_.push_back(std::move(c));
  lock.unlock();
  cv_.notify_one();
}

void ConnectionPool::cancel(Connection& c) {
  c.poisoned = true;
  try {
    c.raw().cancel_query();
  } catch (const std::exception& e) {
    // libpqxx 6.4 throws bad_alloc when libpq has already dropped the socket (PQgetCancel gives
    // NULL): the watchdog's thread must live on either way, and the poisoned connection goes.
    log_.warn("cancelling a query failed", {{"error", e.what()}});
  }
}

void ConnectionPool::close(std::chrono::steady_clock::time_point deadline) {
  std::unique_lock lock(mu_);
  closed_ = true;
  cv_.notify_all();
  std::vector<std::unique_ptr<Connection>> to_close = std::move(idle_);
  idle_.clear();
  open_ -= static_cast<int>(to_close.size());
  // Outstanding leases close their connections when they come back (give_back sees closed_).
  cv_.wait_until(lock, deadline, [&] { return open_ == 0; });
  lock.unlock();
  to_close.clear();
}

PoolStats ConnectionPool::stats() const {
  std::lock_guard lock(mu_);
  PoolStats s = counters_;
  s.open = open_;
  s.idle = static_cast<int>(idle_.size());
  s.busy = open_ - s.idle;
  s.waiting = waiting_;
  return s;
}

}  // namespace agentcron
