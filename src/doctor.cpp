// `agentcron doctor` (see doctor.hpp): one bounded statement reads what the checks need; each
// check turns it into a verdict with advice.
#include "agentcron/doctor.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>

#include "admin_statements.hpp"
#include "agentcron/database_url.hpp"
#include "agentcron/handlers/handler.hpp"
#include "agentcron/log.hpp"
#include "agentcron/migrator.hpp"
#include "agentcron/pg_task_store.hpp"
#include "agentcron/utf8.hpp"

namespace agentcron {

using json = nlohmann::json;
using V = Finding::Verdict;

const char* to_string(Finding::Verdict v) {
  switch (v) {
    case V::ok: return "ok";
    case V::warn: return "warn";
    case V::fail: return "fail";
  }
  return "?";
}

namespace {

std::int64_t num(const json& j, const char* key, std::int64_t fallback = 0) {
  const json& v = j.contains(key) ? j.at(key) : json();
  if (v.is_number()) return v.get<std::int64_t>();
  if (v.is_string()) return std::strtoll(v.get<std::string>().c_str(), nullptr, 10);
  return fallback;
}
double real(const json& j, const char* key, double fallback = 0) {
  const json& v = j.contains(key) ? j.at(key) : json();
  return v.is_number() ? v.get<double>() : fallback;
}
std::string pct(double ratio) { return std::to_string(static_cast<int>(std::lround(ratio * 100))) + " %"; }
std::string ms_text(std::int64_t ms) { return format_duration(Millis(ms)); }

// The limit that binds first, of the server's, the database's and the role's, and its use.
Finding connections(const json& d, const Config& c) {
  struct Scope {
    std::string name;
    std::int64_t limit, used;
  };
  std::vector<Scope> scopes;
  std::int64_t reserved = d.value("is_superuser", false) ? 0 : num(d, "superuser_reserved");
  scopes.push_back({"server max_connections (less " + std::to_string(reserved) + " reserved for superusers)",
                    num(d, "max_connections") - reserved, num(d, "server_connections")});
  if (num(d, "datconnlimit", -1) >= 0)
    scopes.push_back({"the database's CONNECTION LIMIT", num(d, "datconnlimit"), num(d, "database_connections")});
  if (num(d, "rolconnlimit", -1) >= 0)
    scopes.push_back({"the role's CONNECTION LIMIT", num(d, "rolconnlimit"), num(d, "role_connections")});
  const Scope* worst = &scopes.front();
  auto ratio = [](const Scope& s) { return s.limit <= 0 ? 1.0 : static_cast<double>(s.used) / static_cast<double>(s.limit); };
  for (const auto& s : scopes)
    if (ratio(s) > ratio(*worst)) worst = &s;
  double r = ratio(*worst);
  std::int64_t free = worst->limit - worst->used;
  int workers = static_cast<int>(d.contains("workers") ? d.at("workers").size() : 0);
  std::string seen;  // the agentcron workers and how many connections each holds (its pool)
  for (const auto& w : d.value("workers", json::array())) {
    if (seen.size() > 200) {
      seen += ", …";
      break;
    }
    seen += (seen.empty() ? "" : ", ") + one_line_text(w.value("worker", std::string("?"))) + " " +
            std::to_string(num(w, "connections"));
  }
  Finding f;
  f.check = "connections";
  std::string users;
  for (const auto& a : d.value("by_application", json::array())) {
    if (users.size() > 200) break;
    users += (users.empty() ? "" : ", ") + one_line_text(a.value("application", std::string("?"))) + " " +
             std::to_string(num(a, "connections"));
  }
  std::int64_t hidden = num(d, "hidden_connections");
  f.summary = std::to_string(worst->used) + " of " + std::to_string(worst->limit) + " connections in use (" + pct(r) +
              ", " + worst->name + "); " + std::to_string(workers) + " agentcron worker(s) connected" +
              (seen.empty() ? "" : " (" + seen + ")") + "; by application: " +
              (users.empty() ? "-" : users) +
              (hidden > 0 ? "; " + std::to_string(hidden) + " of other roles (their application names need pg_read_all_stats)" : "");
  int per_worker = c.database.connection_limit;
  if (r >= 0.95 || free < per_worker) {
    f.verdict = V::fail;
  } else if (r >= 0.8) {
    f.verdict = V::warn;
  }
  if (f.verdict != V::ok) {
    f.advice.push_back(std::to_string(free) + " connection(s) left; one more agentcron worker with this configuration may open " +
                       std::to_string(per_worker) + " (database.connection_limit), and an application's pool as many as it is allowed");
    f.advice.push_back("lower database.connection_limit (2 is enough for most workers; 1 turns LISTEN off), or "
                       "cap the application's pool (Prisma: ?connection_limit=N)");
    f.advice.push_back("put PgBouncer in transaction mode in front (and set database.pgbouncer = true), or raise " +
                       std::string(worst->name.find("role") != std::string::npos     ? "the role's CONNECTION LIMIT"
                                   : worst->name.find("database") != std::string::npos ? "the database's CONNECTION LIMIT"
                                                                                       : "max_connections (a restart)"));
  }
  return f;
}

// A pooler or proxy between us and the server: the server sees another port than the one we
// connected to, or a Unix socket while we connected over TCP.
Finding pooler(const json& d, const Config& c) {
  Finding f;
  f.check = "pooler";
  std::optional<std::string> port, host;
  try {
    DatabaseUrl url = parse_database_url(c.database.url);
    port = url.get("port");
    host = url.get("host");
  } catch (const std::exception&) {
  }
  if (!port)
    if (const char* env = std::getenv("PGPORT")) port = env;
  if (!host)
    if (const char* env = std::getenv("PGHOST")) host = env;
  // libpq's default (no host) is the Unix socket, as is a host that is a directory.
  bool client_socket = !host || host->empty() || host->starts_with("/") || host->starts_with("@");
  bool server_socket = d.at("server_port").is_null();
  std::int64_t server_port = num(d, "server_port", 0);
  std::int64_t client_port = port ? std::strtoll(port->c_str(), nullptr, 10) : 5432;
  // 6432 is PgBouncer's default port, 6543 Supabase's transaction pooler (Supavisor).
  bool in_between = !client_socket && (server_socket || server_port != client_port);
  bool known_pooler = in_between && (client_port == 6432 || client_port == 6543);
  if (client_socket) {
    f.summary = "connected over a Unix socket (port " + std::to_string(client_port) + ")";
  } else if (in_between) {
    f.summary = "something sits between agentcron and PostgreSQL: it connects to port " + std::to_string(client_port) +
                ", the server sees " + (server_socket ? std::string("a Unix socket") : "port " + std::to_string(server_port)) +
                (client_port == 6543 ? " (6543 is Supabase's transaction pooler)"
                 : client_port == 6432 ? " (6432 is PgBouncer's port)"
                                       : " (PgBouncer, a proxy, or a port mapping)");
  } else {
    f.summary = "connected to PostgreSQL directly (port " + std::to_string(client_port) + ")";
  }
  if (in_between && !c.database.pgbouncer) {
    // A known pooler port is almost surely transaction pooling; any other difference may be a
    // plain proxy or a port mapping, which need nothing.
    f.verdict = known_pooler ? V::fail : V::warn;
    f.advice.push_back("if it pools in transaction mode, set database.pgbouncer = true (or ?pgbouncer=true in the URL): "
                       "named prepared statements and LISTEN break there");
    f.advice.push_back("a TCP proxy, a port mapping or a session-mode pooler needs nothing");
  } else if (c.database.pgbouncer && !in_between && !client_socket) {
    f.verdict = V::warn;
    f.advice.push_back("database.pgbouncer = true but no pooler was found: LISTEN is off and every claim inlines its "
                       "values; set it to false when connecting to PostgreSQL directly");
  }
  return f;
}

Finding server_timeouts(const json& d, const Config& c) {
  Finding f;
  f.check = "server timeouts";
  std::int64_t statement = num(d, "statement_timeout_ms"), idle_tx = num(d, "idle_in_transaction_ms"),
               idle_session = num(d, "idle_session_ms"), lock = num(d, "lock_timeout_ms");
  f.summary = "statement_timeout " + (statement ? ms_text(statement) : std::string("off")) + ", lock_timeout " +
              (lock ? ms_text(lock) : std::string("off")) + ", idle_in_transaction_session_timeout " +
              (idle_tx ? ms_text(idle_tx) : std::string("off")) + ", idle_session_timeout " +
              (idle_session ? ms_text(idle_session) : std::string("off")) + " (agentcron sets its own per transaction)";
  // Every agentcron transaction sets its own statement, lock and idle-in-transaction timeouts
  // (SET LOCAL), whatever the server's; what it cannot override is a session ended while it
  // waits idle in the pool.
  if (idle_session > 0 && Millis(idle_session) < c.database.max_lifetime) {
    f.verdict = V::warn;
    f.advice.push_back("the server ends sessions idle for " + ms_text(idle_session) +
                       ", shorter than database.max_lifetime (" + format_duration(c.database.max_lifetime) +
                       "): pooled connections die between statements; set database.max_lifetime below it");
  }
  return f;
}

Finding read_only(const json& d) {
  Finding f;
  f.check = "writable";
  bool recovery = d.value("in_recovery", false);
  bool ro = d.value("default_read_only", std::string("off")) == "on";
  if (recovery) {
    f.verdict = V::fail;
    f.summary = "the server is a replica (in recovery): every claim and outcome would fail";
    f.advice.push_back("point database.url at the primary (a read-write endpoint)");
  } else if (ro) {
    f.verdict = V::fail;
    f.summary = "default_transaction_read_only is on for this database or role: every write fails with 25006";
    f.advice.push_back("ALTER DATABASE … SET default_transaction_read_only = off (or the role's), or use the primary");
  } else {
    f.summary = "the primary, writable";
  }
  return f;
}

Finding clock(const json& d, double local_mid_epoch) {
  Finding f;
  f.check = "clock";
  double skew = local_mid_epoch - real(d, "db_epoch", local_mid_epoch);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%+.3f s", skew);
  f.summary = std::string("this host's clock is ") + buf + " from the database's";
  if (std::abs(skew) > 30) f.verdict = V::fail;
  else if (std::abs(skew) > 2) f.verdict = V::warn;
  if (f.verdict != V::ok)
    f.advice.push_back("due-ness and leases follow the database's clock, but `enqueue --at`, logs and timeouts follow "
                       "this host's: run NTP (chrony, systemd-timesyncd) on both");
  return f;
}

Finding table(const json& d) {
  Finding f;
  f.check = "tasks table";
  std::int64_t live = num(d, "live_tuples"), dead = num(d, "dead_tuples");
  double mib = static_cast<double>(num(d, "table_bytes")) / (1 << 20);
  double due_mib = static_cast<double>(num(d, "due_index_bytes")) / (1 << 20);
  char buf[200];
  std::snprintf(buf, sizeof buf, "%lld live rows, %lld dead (%s), %.1f MiB with indexes, due index %.1f MiB",
                static_cast<long long>(live), static_cast<long long>(dead),
                live + dead > 0 ? pct(static_cast<double>(dead) / static_cast<double>(live + dead)).c_str() : "0 %", mib, due_mib);
  f.summary = buf;
  const json& invalid = d.value("invalid_indexes", json::array());
  if (!invalid.empty()) {
    f.verdict = V::fail;
    f.advice.push_back("invalid index(es) " + invalid.dump() +
                       " (a failed CREATE INDEX CONCURRENTLY): REINDEX INDEX CONCURRENTLY each, or the claim loses its plan");
  }
  if (dead > 10000 && dead > live / 5) {
    if (f.verdict == V::ok) f.verdict = V::warn;
    f.advice.push_back("autovacuum is behind: VACUUM (ANALYZE) agentcron.agent_tasks; for a busy queue, "
                       "ALTER TABLE agentcron.agent_tasks SET (autovacuum_vacuum_scale_factor = 0.01)");
  }
  // A due index far larger than the live rows explain is bloated: every claim reads more of it.
  if (due_mib > 64 && due_mib * (1 << 20) > 200.0 * static_cast<double>(std::max<std::int64_t>(live, 1))) {
    if (f.verdict == V::ok) f.verdict = V::warn;
    f.advice.push_back("the due index is bloated: REINDEX INDEX CONCURRENTLY agentcron.agent_tasks_due_idx");
  }
  return f;
}

Finding kinds(const json& d, const Config& c) {
  Finding f;
  f.check = "kinds";
  std::vector<std::string> handled;
  for (const auto& h : c.handlers) handled.push_back(h.kind);
  std::vector<std::string> paused;
  for (const auto& k : d.value("paused_kinds", json::array())) paused.push_back(k.get<std::string>());
  std::string stuck, held;
  for (const auto& k : d.value("due_kinds", json::array())) {
    std::string kind = one_line_text(k.value("kind", std::string("?")));
    double oldest = real(k, "oldest_seconds");
    std::string line = kind + " (" + std::to_string(num(k, "due")) + " due, oldest " +
                       format_duration(std::chrono::seconds(static_cast<std::int64_t>(oldest))) + ")";
    if (std::find(paused.begin(), paused.end(), kind) != paused.end()) {
      held += (held.empty() ? "" : ", ") + line;
    } else if (std::find(handled.begin(), handled.end(), kind) == handled.end() && oldest > 60) {
      stuck += (stuck.empty() ? "" : ", ") + line;
    }
  }
  f.summary = "this configuration handles " + std::to_string(handled.size()) + " kind(s); " +
              std::to_string(paused.size()) + " paused fleet-wide";
  if (!stuck.empty()) {
    f.verdict = V::warn;
    f.summary += "; due for over a minute with no handler here: " + stuck;
    f.advice.push_back("add a [handlers.<kind>] for each, or run a worker that has one; a task of a kind no worker "
                       "handles stays pending for ever");
  }
  if (handled.size() > kManyKinds) {
    f.verdict = V::warn;
    f.summary += "; more than " + std::to_string(kManyKinds) + " kinds in this configuration";
    f.advice.push_back(kManyKindsAdvice);
  }
  if (!held.empty()) {
    f.summary += "; paused: " + held;
    f.advice.push_back("`agentcron kinds resume KIND` when it should run again");
  }
  return f;
}

Finding leases(const json& d) {
  Finding f;
  f.check = "leases";
  std::int64_t expired = num(d, "expired_leases");
  if (expired == 0) {
    f.summary = "no running task is past its lease";
    return f;
  }
  f.verdict = V::warn;
  f.summary = std::to_string(expired) + " running task(s) past their lease by over a minute (the oldest by " +
              format_duration(std::chrono::seconds(static_cast<std::int64_t>(real(d, "oldest_expired_seconds")))) + ")";
  f.advice.push_back("their worker died or stalled, and no rescuer returned them: the rescuer runs in `agentcron run` "
                     "only, so keep at least one running (not only `once`)");
  return f;
}

}  // namespace

std::vector<Finding> run_doctor(PgTaskStore& store, const Config& c, Logger& log) {
  std::vector<Finding> out;
  Finding schema;
  schema.check = "schema";
  int pending = 0;
  for (const auto& m : Migrator(store, log).status()) {
    if (!m.applied) ++pending;
    if (m.changed) {
      schema.verdict = V::fail;
      schema.advice.push_back("migration " + m.name + " changed since it was applied: run the agentcron version that applied it");
    }
  }
  schema.summary = pending == 0 ? "migrated" : std::to_string(pending) + " migration(s) pending";
  if (pending > 0) {
    schema.verdict = V::fail;
    schema.advice.push_back("run `agentcron migrate` (safe from several hosts at once; see docs/operations.md for a large table)");
    out.push_back(schema);
    return out;  // the other checks read the schema's tables
  }
  out.push_back(schema);
  double before = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  TextRows r = store.query("doctor", pg::admin::kDoctor, {c.database.application_name});
  double after = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  json d = json::parse(r.rows.at(0).at(0).value_or("{}"));
  out.push_back(connections(d, c));
  out.push_back(pooler(d, c));
  out.push_back(server_timeouts(d, c));
  out.push_back(read_only(d));
  out.push_back(clock(d, (before + after) / 2));
  out.push_back(table(d));
  out.push_back(kinds(d, c));
  out.push_back(leases(d));
  return out;
}

std::string render_findings(const std::vector<Finding>& findings, bool as_json) {
  if (as_json) {
    json all = json::array();
    for (const auto& f : findings)
      all.push_back({{"check", f.check}, {"verdict", to_string(f.verdict)}, {"summary", f.summary}, {"advice", f.advice}});
    return all.dump(2, ' ', true) + "\n";  // ASCII only: nothing an agent wrote can drive a terminal
  }
  std::string out;
  for (const auto& f : findings) {
    out += std::string("[") + to_string(f.verdict) + "] " + f.check + ": " + f.summary + "\n";
    for (const auto& a : f.advice) out += "       -> " + a + "\n";
  }
  return out;
}

}  // namespace agentcron
