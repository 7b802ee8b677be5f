// How PgTaskStore runs a statement: in a short transaction on a pooled connection, with its
// query class's SET LOCAL timeouts, prepared once per connection (or, in pgbouncer mode, with its
// parameters inlined as escaped literals), watched by the client-side statement watchdog; and
// libpqxx's errors translated into DatabaseError. Private to pg_task_store.cpp.
#pragma once
#include <poll.h>
#include <sys/socket.h>

#include <cctype>
#include <optional>
#include <pqxx/pqxx>
#include <stdexcept>
#include <string>
#include <vector>

#include "agentcron/pg_task_store.hpp"
#include "agentcron/retry.hpp"
#include "agentcron/statement_watchdog.hpp"
#include "connection.hpp"
#include "pg_statements.hpp"

namespace agentcron::pg {


inline std::string one_line(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  for (auto& c : s)
    if (c == '\n') c = ' ';
  return s;
}

// An array literal for a text[]/bigint[]/… parameter; nullopt elements are NULL.
template <class T, class F>
inline std::string array_literal(const std::vector<T>& items, F&& element) {
  std::string out = "{";
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i) out += ',';
    std::optional<std::string> v = element(items[i]);
    if (!v) {
      out += "NULL";
      continue;
    }
    out += '"';
    for (char c : *v) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    out += '"';
  }
  return out + "}";
}

inline std::string iso(SysTime t) {
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
  return std::to_string(us / 1'000'000) + "." + std::to_string(1'000'000 + (us % 1'000'000)).substr(1);
}

inline SysTime from_epoch_us(std::int64_t us) { return SysTime(std::chrono::microseconds(us)); }

inline const char* status_text(Completion::Status s) {
  switch (s) {
    case Completion::Status::succeeded: return "succeeded";
    case Completion::Status::pending: return "pending";
    case Completion::Status::failed: return "failed";
  }
  return "failed";
}

// The SET LOCALs that start every transaction of a query class. JIT is off: the statements are
// short, and a queue table's statistics, stale by nature, let the planner's cost cross
// jit_above_cost at random (bench-scale saw `status` take 40 ms instead of 3 at one size).
inline std::string set_local(const QueryTimeouts& t, bool hash_by_id = false, bool generic_plan = false) {
  return "SET LOCAL jit = off; SET LOCAL statement_timeout = " + std::to_string(t.statement.count()) +
         "; SET LOCAL lock_timeout = " + std::to_string(t.lock.count()) +
         "; SET LOCAL idle_in_transaction_session_timeout = " + std::to_string(t.idle_in_transaction.count()) +
         (t.async_commit ? "; SET LOCAL synchronous_commit = off" : "") +
         (generic_plan ? std::string("; ") + kGenericPlanSql : std::string()) +
         (hash_by_id ? "; SET LOCAL enable_nestloop = off; " : "; ");
}

// Runs `body` on a pooled connection, translating libpqxx errors into DatabaseError; a broken
// connection is discarded. `implicit`: the body sends one multi-statement query, which PostgreSQL
// runs as one implicit transaction (timeouts, statement and commit in a single round trip);
// otherwise the body runs between BEGIN (with the timeouts) and COMMIT, and an error during the
// COMMIT is in doubt.
template <class Body>
auto in_transaction(ConnectionPool& pool, StatementWatchdog& watchdog, const QueryTimeouts& t, Millis grace,
                    const char* what, bool implicit, Body&& body) {
  Lease lease = pool.acquire();
  Connection& c = lease.connection();
  std::string stage = implicit ? "statement" : "begin";
  // After an error inside BEGIN … COMMIT: the connection goes back to the pool idle, or not at all.
  auto roll_back = [&] {
    if (c.poisoned) {
      lease.discard();
    } else if (!implicit) {
      try {
        pqxx::nontransaction rb(c.raw());
        rb.exec("ROLLBACK");
      } catch (const pqxx::failure&) {
        lease.discard();
      }
    }  // an implicit transaction ended with its error: the connection is idle again
  };
  try {
    WatchedStatement watch(watchdog, t.statement + grace,
                           {[&pool, &c] { pool.cancel(c); }, [&c] { ::shutdown(c.raw().sock(), SHUT_RDWR); }});
    pqxx::nontransaction tx(c.raw());
    if (!implicit) tx.exec("BEGIN; " + set_local(t));
    stage = "statement";
    auto result = body(tx, c);
    if (!implicit) {
      stage = "commit";
      tx.exec("COMMIT");
    }
    return result;
  } catch (const pqxx::sql_error& e) {
    std::string state = e.sqlstate();
    bool cancelled = c.poisoned;  // read before roll_back(): a discard destroys the connection
    roll_back();
    if (state.empty()) state = cancelled ? "57014" : "";
    ErrorClass cls = state.empty() ? ErrorClass::permanent : classify_sqlstate(state);
    throw DatabaseError(std::string(what) + ": " + one_line(e.what()), state, cls);
  } catch (const pqxx::broken_connection& e) {
    lease.discard();
    // Never retry here: the commit may have happened. (Every write of the task store is guarded
    // by the lease holder and attempt, so the callers that do retry cannot apply one twice.)
    ErrorClass cls = stage == "commit" ? ErrorClass::in_doubt : ErrorClass::transient;
    throw DatabaseError(std::string(what) + ": connection lost" + (stage == "commit" ? " during COMMIT" : "") + ": " +
                            one_line(e.what()),
                        "08006", cls);
  } catch (const pqxx::in_doubt_error& e) {
    lease.discard();
    throw DatabaseError(std::string(what) + ": " + one_line(e.what()), "08006", ErrorClass::in_doubt);
  } catch (const pqxx::failure& e) {
    lease.discard();
    throw DatabaseError(std::string(what) + ": " + one_line(e.what()), "", ErrorClass::transient);
  } catch (const DatabaseError&) {
    // The body's own refusal (a migration changed since it was applied, found under the
    // migration lock): its transaction, and any lock it took, must not go back to the pool.
    roll_back();
    throw;
  } catch (const std::exception& e) {
    // Not the server's word: the client refused the statement's values (libpq will not quote
    // invalid UTF-8) or could not read its result. Sending it again changes nothing. Whether the
    // connection is mid-statement is unknown, so it goes.
    lease.discard();
    throw DatabaseError(std::string(what) + ": " + one_line(e.what()), "", ErrorClass::permanent);
  }
}

// SQL literals of statement parameters. libpq's quoting stops at a NUL byte, which would cut
// the value short without a word; PostgreSQL text cannot hold one anyway: refused here.
inline std::string literal(pqxx::transaction_base& tx, const std::string& v) {
  if (v.find('\0') != std::string::npos)
    throw std::invalid_argument("a text value holds a NUL byte, which PostgreSQL cannot store");
  return tx.quote(v);
}
template <class I, class = std::enable_if_t<std::is_integral_v<I>>>
inline std::string literal(pqxx::transaction_base&, I v) {
  return std::to_string(v);
}
template <class T>
inline std::string literal(pqxx::transaction_base& tx, const std::optional<T>& v) {
  return v ? literal(tx, *v) : std::string("NULL");
}

// `sql` with $1…$N replaced by the literals (our statements have no $ in strings or bodies).
inline std::string inline_params(const char* sql, const std::vector<std::string>& lits) {
  std::string out;
  for (const char* p = sql; *p;) {
    if (*p == '$' && std::isdigit(static_cast<unsigned char>(p[1]))) {
      std::size_t n = 0;
      ++p;
      while (std::isdigit(static_cast<unsigned char>(*p))) n = n * 10 + static_cast<std::size_t>(*p++ - '0');
      out += "(" + lits.at(n - 1) + ")";
    } else {
      out += *p++;
    }
  }
  return out;
}

// Runs one statement as a whole transaction in one round trip: the query class's SET LOCALs,
// then EXECUTE of the statement prepared (once per connection, by SQL PREPARE) — or, in
// pgbouncer mode, the statement itself with its parameters inlined: nothing session-scoped.
inline pqxx::result run_literals(pqxx::transaction_base& tx, Connection& c, bool pgbouncer, const QueryTimeouts& t,
                                 const Statement& s, const std::vector<std::string>& lits) {
  const char* name = s.name;
  const char* sql = s.sql;
  // The plan settings too: the claim's LIMITs on subqueries are no constants even inlined.
  if (pgbouncer) return tx.exec(set_local(t, s.hash_by_id, s.generic_plan) + inline_params(sql, lits));
  std::string q = set_local(t, s.hash_by_id, s.generic_plan);
  bool first_use = !c.prepared.count(name);
  // PREPARE analyses the statement and so takes its locks: it runs under the same timeouts.
  if (first_use) q += std::string("PREPARE ") + name + " AS " + sql + "; ";
  q += "EXECUTE " + std::string(name);
  if (!lits.empty()) {
    q += "(";
    for (std::size_t i = 0; i < lits.size(); ++i) q += (i ? ", " : "") + lits[i];
    q += ")";
  }
  // Should this first use fail, whether the statement got prepared is unknown: the connection
  // is then discarded rather than guessed about.
  if (first_use) c.poisoned = true;
  pqxx::result r = tx.exec(q);
  if (first_use) {
    c.poisoned = false;
    c.prepared.insert(name);
  }
  return r;
}

template <class... Args>
pqxx::result run(pqxx::transaction_base& tx, Connection& c, bool pgbouncer, const QueryTimeouts& t, const Statement& s,
                 Args&&... args) {
  return run_literals(tx, c, pgbouncer, t, s, std::vector<std::string>{literal(tx, args)...});
}

// A bigint[] result ("{1,2,3}", or NULL for none) as its ids.
inline std::vector<std::int64_t> id_array(const pqxx::field& f) {
  std::vector<std::int64_t> ids;
  if (f.is_null()) return ids;
  const char* p = f.c_str();
  while (*p) {
    if (*p == '-' || std::isdigit(static_cast<unsigned char>(*p))) {
      char* end = nullptr;
      ids.push_back(std::strtoll(p, &end, 10));
      p = end;
    } else {
      ++p;
    }
  }
  return ids;
}

inline std::optional<std::string> opt_text(const pqxx::field& f) {
  if (f.is_null()) return std::nullopt;
  return f.as<std::string>();
}

// A claimed row as a Task. A field this process cannot represent does not fail the claim (the
// row is claimed already, and so are the good rows beside it): the task carries the reason as
// its defect and the executor fails it alone.
inline Task task_from_row(const pqxx::row& row, std::chrono::steady_clock::time_point sent) {
  Task t;
  t.id = row[0].as<std::int64_t>();
  t.claim_token = row[13].as<std::int64_t>();
  t.claimed_at = from_epoch_us(row[10].as<std::int64_t>());
  t.claimed_steady = sent;
  t.kind = row[2].as<std::string>();
  try {
    t.agent_id = opt_text(row[1]);
    if (row[3].is_null())
      throw std::length_error("the payload is " + row[12].as<std::string>() +
                              " bytes, more than executor.max_payload_bytes allows; it was not read");
    t.payload = row[3].as<std::string>();
    t.attempt = row[4].as<int>();
    t.max_attempts = row[5].as<int>();
    t.cron = opt_text(row[6]);
    t.timezone = row[7].as<std::string>();
    if (!row[8].is_null()) t.timeout_ms = row[8].as<int>();
    t.scheduled_for = from_epoch_us(row[9].as<std::int64_t>());
    t.occurrence = from_epoch_us(row[14].as<std::int64_t>());
  } catch (const std::length_error& e) {
    t.defect = e.what();
  } catch (const std::exception& e) {
    t.defect = std::string("the task's row could not be read: ") + e.what();
  }
  return t;
}

}  // namespace agentcron::pg
