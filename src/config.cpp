// Loading and validation of the configuration (see config.hpp). One table, `kKeys`, describes
// every key: its type, range, whether SIGHUP reloads it; loading, `config check` and the docs
// test all read it, so they cannot drift apart.
#include "agentcron/config.hpp"

#include <toml++/toml.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <sstream>
#include <variant>

#include "agentcron/cron.hpp"
#include "agentcron/database_url.hpp"
#include "agentcron/handlers/exec.hpp"
#include "agentcron/log.hpp"
#include "agentcron/utf8.hpp"
#include "config_parts.hpp"

extern char** environ;

namespace agentcron {
namespace {

using config_parts::fail;
using config_parts::kMaxDuration;
using config_parts::parse_handler;
using config_parts::parse_schedule;
using config_parts::where_in;

using IntRef = int& (*)(Config&);
using NumRef = double& (*)(Config&);
using BoolRef = bool& (*)(Config&);
using DurRef = Millis& (*)(Config&);
using StrRef = std::string& (*)(Config&);
using Ref = std::variant<IntRef, NumRef, BoolRef, DurRef, StrRef>;
// A check of a string value: nullopt when fine, else what is wrong ("must be one of …").
using StrCheck = std::optional<std::string> (*)(const std::string&);

struct KeySpec {
  const char* section;
  const char* name;
  Ref ref;
  double min = 0, max = 0;  // integer and number ranges; durations: min in ms (exclusive 0)
  bool reloadable = false;
  StrCheck check = nullptr;
  const char* range_doc = "";
  const char* doc = "";
  std::string key() const { return std::string(section) + "." + name; }
};

#define REF(member) [](Config& c) -> auto& { return c.member; }

// Far beyond any sensible setting, and safe from overflow when added to a clock.
constexpr double kMaxServerTimeoutMs = 2147483647;  // INT_MAX ms: statement_timeout's and libpq's limit

std::optional<std::string> check_cron(const std::string& v) {
  try {
    CronSchedule::parse(v);
    return std::nullopt;
  } catch (const CronError& e) {
    return std::string("is not a valid schedule: ") + e.what();
  }
}
std::optional<std::string> check_zone(const std::string& v) {
  if (TimeZone::find(v)) return std::nullopt;
  return "is not a known IANA time zone: \"" + v + "\"";
}
std::optional<std::string> check_level(const std::string& v) {
  if (parse_log_level(v)) return std::nullopt;
  return "must be one of trace, debug, info, warn, error, off, got \"" + v + "\"";
}
std::optional<std::string> check_format(const std::string& v) {
  if (resolve_log_format(v, false, false)) return std::nullopt;
  return "must be one of auto, text, json, journal, got \"" + v + "\"";
}
std::optional<std::string> check_url(const std::string& v) {
  try {
    parse_database_url(v);
    return std::nullopt;
  } catch (const DatabaseUrlError& e) {
    return std::string("is not a valid connection string: ") + e.what();
  }
}
std::optional<std::string> check_listen(const std::string& v) {
  if (v.empty()) return std::nullopt;
  auto colon = v.rfind(':');
  std::string port = colon == std::string::npos ? "" : v.substr(colon + 1);
  if (colon == 0 || port.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](unsigned char c) { return std::isdigit(c); }) ||
      std::stoi(port) > 65535)
    return "must be host:port (or \"\" for off), got \"" + v + "\"";
  return std::nullopt;
}
std::optional<std::string> check_app_name(const std::string& v) {
  if (v.empty() || v.size() > 40) return "must be 1 to 40 characters, got \"" + v + "\"";
  return std::nullopt;
}

const std::vector<KeySpec>& key_specs() {
  static const std::vector<KeySpec> specs = {
      {"database", "url", StrRef(REF(database.url)), 0, 0, false, check_url, "postgres:// URL or libpq key=value",
       "Where the database is. May carry connection_limit, pool_timeout, connect_timeout, statement_timeout, pgbouncer, schema."},
      {"database", "connection_limit", IntRef(REF(database.connection_limit)), 1, 1000, false, nullptr, "1–1000",
       "Most connections the process opens, the LISTEN connection included."},
      {"database", "pool_timeout", DurRef(REF(database.pool_timeout)), 1, 0, false, nullptr, "> 0",
       "Longest wait for a free pooled connection before an acquire fails."},
      {"database", "connect_timeout", DurRef(REF(database.connect_timeout)), 1000, kMaxServerTimeoutMs, false, nullptr, ">= 1s, at most 2147483647ms (24.8d)",
       "Time limit of one connection attempt."},
      {"database", "network_timeout", DurRef(REF(database.network_timeout)), 1000, kMaxServerTimeoutMs, false, nullptr, ">= 1s, at most 2147483647ms (24.8d)",
       "A dead network peer is noticed within this (TCP keepalives and tcp_user_timeout)."},
      {"database", "max_lifetime", DurRef(REF(database.max_lifetime)), 1000, 0, false, nullptr, ">= 1s",
       "A pooled connection is closed and replaced after this age."},
      {"database", "pgbouncer", BoolRef(REF(database.pgbouncer)), 0, 0, false, nullptr, "true/false",
       "PgBouncer transaction-pooling mode: no named prepared statements, no session SET, no LISTEN."},
      {"database", "application_name", StrRef(REF(database.application_name)), 0, 0, false, check_app_name, "1–40 characters",
       "pg_stat_activity shows each connection as <application_name>/<worker id>."},
      {"timeouts", "claim", DurRef(REF(timeouts.claim)), 1, kMaxServerTimeoutMs, false, nullptr, "> 0, at most 2147483647ms (24.8d)",
       "statement_timeout of the claim query."},
      {"timeouts", "update", DurRef(REF(timeouts.update)), 1, kMaxServerTimeoutMs, false, nullptr, "> 0, at most 2147483647ms (24.8d)",
       "statement_timeout of every other query (complete, release, extend, rescue, enqueue)."},
      {"timeouts", "lock", DurRef(REF(timeouts.lock)), 1, kMaxServerTimeoutMs, false, nullptr, "> 0, at most 2147483647ms (24.8d)",
       "lock_timeout of every transaction."},
      {"timeouts", "idle_in_transaction", DurRef(REF(timeouts.idle_in_transaction)), 1, kMaxServerTimeoutMs, false, nullptr, "> 0, at most 2147483647ms (24.8d)",
       "idle_in_transaction_session_timeout of every transaction."},
      {"scheduler", "schedule", StrRef(REF(scheduler.schedule)), 0, 0, true, check_cron, "cron (5 or 6 fields) or @every",
       "When the poller claims due tasks."},
      {"scheduler", "timezone", StrRef(REF(scheduler.timezone)), 0, 0, true, check_zone, "IANA zone",
       "Time zone of the poll schedule."},
      {"scheduler", "batch_size", IntRef(REF(scheduler.batch_size)), 1, 10000, true, nullptr, "1–10000",
       "Most tasks one claim query returns."},
      {"scheduler", "max_batches_per_tick", IntRef(REF(scheduler.max_batches_per_tick)), 1, 10000, false, nullptr, "1–10000",
       "Most claim queries in one tick."},
      {"scheduler", "concurrency", IntRef(REF(scheduler.concurrency)), 1, 10000, true, nullptr, "1–10000",
       "Executor slots: tasks running at once."},
      {"scheduler", "listen", BoolRef(REF(scheduler.listen)), 0, 0, false, nullptr, "true/false",
       "Wake on NOTIFY agentcron_due (forced off in pgbouncer mode)."},
      {"scheduler", "lease", DurRef(REF(scheduler.lease)), 3000, 0, false, nullptr, ">= 3s",
       "Lease of a running task, extended every lease/3; an expired lease is rescued."},
      {"scheduler", "durable_claims", BoolRef(REF(scheduler.durable_claims)), 0, 0, false, nullptr, "true/false",
       "Claims wait for their WAL flush; false saves it, but a server crash may then lose a claim whose tasks are running."},
      {"executor", "task_timeout", DurRef(REF(executor.task_timeout)), 1, 0, false, nullptr, "> 0",
       "A handler's time limit unless the task's timeout_ms says otherwise."},
      {"executor", "max_payload_bytes", IntRef(REF(executor.max_payload_bytes)), 1024, 1 << 30, false, nullptr,
       "1024–1073741824", "A task whose payload (as JSON text) is larger fails without being read or run."},
      {"retry", "base_delay", DurRef(REF(retry.base_delay)), 1, 0, false, nullptr, "> 0",
       "First retry delay of a failed task (and of a transient database error)."},
      {"retry", "max_delay", DurRef(REF(retry.max_delay)), 1, 0, false, nullptr, "> 0",
       "Cap of the retry delay."},
      {"retry", "factor", NumRef(REF(retry.factor)), 1, 100, false, nullptr, "1–100",
       "Growth of the retry delay per attempt."},
      {"retry", "breaker_threshold", IntRef(REF(retry.breaker_threshold)), 1, 1000, false, nullptr, "1–1000",
       "Consecutive transient database failures that open the circuit breaker."},
      {"retry", "breaker_cooldown", DurRef(REF(retry.breaker_cooldown)), 1, 0, false, nullptr, "> 0",
       "How long an open breaker refuses database calls before one probe."},
      {"shutdown", "grace", DurRef(REF(shutdown.grace)), 1, 0, false, nullptr, "> 0",
       "Time in-flight tasks get after the first SIGTERM/SIGINT."},
      {"retention", "succeeded", DurRef(REF(retention.succeeded)), 1000, 0, false, nullptr, ">= 1s",
       "Succeeded tasks (and their runs) are deleted after this."},
      {"retention", "failed", DurRef(REF(retention.failed)), 1000, 0, false, nullptr, ">= 1s",
       "Failed and cancelled tasks (and their runs) are deleted after this."},
      {"metrics", "listen", StrRef(REF(metrics.listen)), 0, 0, false, check_listen, "host:port or \"\"",
       "Address of /metrics, /healthz and /readyz; \"\" turns them off."},
      {"log", "level", StrRef(REF(log.level)), 0, 0, true, check_level, "trace, debug, info, warn, error, off",
       "Lowest level logged."},
      {"log", "format", StrRef(REF(log.format)), 0, 0, false, check_format, "auto, text, json, journal",
       "auto: journal under systemd, text on a terminal, else JSON lines."},
  };
  return specs;
}
#undef REF

std::string upper(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}
std::string env_name(const KeySpec& k) { return "AGENTCRON_" + upper(k.section) + "_" + upper(k.name); }

const KeySpec* find_spec(std::string_view key) {
  for (const auto& s : key_specs())
    if (s.key() == key) return &s;
  return nullptr;
}

// A value before conversion: typed when it came from TOML, text when from env or command line.
struct Raw {
  std::variant<std::int64_t, double, bool, std::string> value;
  bool text = false;
  std::string where;   // "file:line", "environment VAR", "command line --x"
};

std::string type_name(const Raw& r) {
  if (r.text) return "text";
  switch (r.value.index()) {
    case 0: return "an integer";
    case 1: return "a float";
    case 2: return "a boolean";
    default: return "a string";
  }
}

std::string show_value(const Config& c, const KeySpec& k) {
  Config& m = const_cast<Config&>(c);
  return std::visit(
      [&](auto ref) -> std::string {
        auto& v = ref(m);
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, Millis>) return "\"" + format_duration(v) + "\"";
        else if constexpr (std::is_same_v<T, bool>) return v ? "true" : "false";
        else if constexpr (std::is_same_v<T, std::string>) {
          if (k.key() == "database.url") return "\"" + redact_database_url(v) + "\"";
          return "\"" + v + "\"";
        } else if constexpr (std::is_same_v<T, double>) {
          std::ostringstream o;
          o << v;
          return o.str();
        } else return std::to_string(v);
      },
      k.ref);
}


std::string got_text(const std::string& s) { return "\"" + s + "\""; }

// The value of `raw` for key `k` as each type of key reads it; a bad one is a ConfigError.
int int_value(const KeySpec& k, const Raw& raw, const std::string& key) {
  std::int64_t v = 0;
  if (raw.text) {
    const auto& s = std::get<std::string>(raw.value);
    std::size_t used = 0;
    try { v = std::stoll(s, &used); } catch (...) { used = 0; }
    if (s.empty() || used != s.size()) fail(raw.where, key, "must be an integer, got " + got_text(s));
  } else if (auto* i = std::get_if<std::int64_t>(&raw.value)) {
    v = *i;
  } else {
    fail(raw.where, key, "must be an integer, got " + type_name(raw));
  }
  if (static_cast<double>(v) < k.min || static_cast<double>(v) > k.max)
    fail(raw.where, key, "must be between " + std::to_string(static_cast<long long>(k.min)) + " and " +
                             std::to_string(static_cast<long long>(k.max)) + ", got " + std::to_string(v));
  return static_cast<int>(v);
}

double number_value(const KeySpec& k, const Raw& raw, const std::string& key) {
  double v = 0;
  if (raw.text) {
    const auto& s = std::get<std::string>(raw.value);
    std::size_t used = 0;
    try { v = std::stod(s, &used); } catch (...) { used = 0; }
    if (s.empty() || used != s.size()) fail(raw.where, key, "must be a number, got " + got_text(s));
  } else if (auto* d = std::get_if<double>(&raw.value)) {
    v = *d;
  } else if (auto* i = std::get_if<std::int64_t>(&raw.value)) {
    v = static_cast<double>(*i);
  } else {
    fail(raw.where, key, "must be a number, got " + type_name(raw));
  }
  if (!std::isfinite(v) || v < k.min || v > k.max) {
    std::ostringstream o;
    o << "must be between " << k.min << " and " << k.max << ", got " << v;
    fail(raw.where, key, o.str());
  }
  return v;
}

bool bool_value(const Raw& raw, const std::string& key) {
  if (auto* b = std::get_if<bool>(&raw.value)) return *b;
  if (!raw.text) fail(raw.where, key, "must be true or false, got " + type_name(raw));
  std::string s = std::get<std::string>(raw.value);
  for (auto& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  if (s == "true" || s == "1" || s == "yes" || s == "on") return true;
  if (s == "false" || s == "0" || s == "no" || s == "off") return false;
  fail(raw.where, key, "must be true or false, got " + got_text(std::get<std::string>(raw.value)));
}

Millis duration_value(const KeySpec& k, const Raw& raw, const std::string& key) {
  auto* s = std::get_if<std::string>(&raw.value);
  if (!s) fail(raw.where, key, "must be a duration string such as \"15s\", got " + type_name(raw));
  std::string why;
  auto d = parse_duration(*s, &why);
  if (!d) fail(raw.where, key, "must be a duration such as \"250ms\", \"15s\", \"5m\": " + why + ", got " + got_text(*s));
  if (static_cast<double>(d->count()) < k.min)
    fail(raw.where, key, std::string("must be ") + k.range_doc + ", got " + got_text(*s));
  if (*d > kMaxDuration) fail(raw.where, key, "must be at most 3650d, got " + got_text(*s));
  // PostgreSQL's timeouts and libpq's socket timeouts are 32-bit milliseconds.
  if (k.max > 0 && static_cast<double>(d->count()) > k.max)
    fail(raw.where, key, std::string("must be ") + k.range_doc + ", got " + got_text(*s));
  return *d;
}

std::string string_value(const KeySpec& k, const Raw& raw, const std::string& key) {
  auto* s = std::get_if<std::string>(&raw.value);
  if (!s) fail(raw.where, key, "must be a string, got " + type_name(raw));
  if (k.check)
    if (auto problem = k.check(*s)) fail(raw.where, key, *problem);
  return *s;
}

void apply(Config& c, const KeySpec& k, const Raw& raw) {
  const std::string key = k.key();
  std::visit(
      [&](auto ref) {
        auto& slot = ref(c);
        using T = std::decay_t<decltype(slot)>;
        if constexpr (std::is_same_v<T, int>) slot = int_value(k, raw, key);
        else if constexpr (std::is_same_v<T, double>) slot = number_value(k, raw, key);
        else if constexpr (std::is_same_v<T, bool>) slot = bool_value(raw, key);
        else if constexpr (std::is_same_v<T, Millis>) slot = duration_value(k, raw, key);
        else slot = string_value(k, raw, key);
      },
      k.ref);
  c.origins[key] = raw.where;
}

// Applies the Prisma-style parameters of a database URL at the level the URL came from.
void apply_url_params(Config& c, const std::string& url, const std::string& where) {
  DatabaseUrl parsed;
  try {
    parsed = parse_database_url(url);
  } catch (const DatabaseUrlError& e) {
    fail(where, "database.url", std::string("is not a valid connection string: ") + e.what());
  }
  const auto& p = parsed.prisma;
  auto set_raw = [&](const char* key, Raw r) { apply(c, *find_spec(key), r); };
  std::string from = where + " (url parameter)";
  if (p.connection_limit) set_raw("database.connection_limit", {std::int64_t{*p.connection_limit}, false, from});
  auto dur = [&](Millis d) { return Raw{format_duration(d), false, from}; };
  if (p.pool_timeout) set_raw("database.pool_timeout", dur(*p.pool_timeout));
  if (p.connect_timeout) set_raw("database.connect_timeout", dur(*p.connect_timeout));
  if (p.statement_timeout) {
    set_raw("timeouts.claim", dur(*p.statement_timeout));
    set_raw("timeouts.update", dur(*p.statement_timeout));
  }
  if (p.pgbouncer) set_raw("database.pgbouncer", {*p.pgbouncer, false, from});
  if (auto app = parsed.get("application_name")) set_raw("database.application_name", {*app, false, from});
}

// Applies one level's values: the URL's parameters first, then the explicit keys, so that an
// explicit key beats a URL parameter of the same level.
void apply_level(Config& c, const std::vector<std::pair<const KeySpec*, Raw>>& values) {
  for (const auto& [spec, raw] : values)
    if (spec->key() == "database.url") apply_url_params(c, string_value(*spec, raw, spec->key()), raw.where);
  for (const auto& [spec, raw] : values) apply(c, *spec, raw);
}

void read_file(Config& c, const std::string& path, std::vector<std::pair<const KeySpec*, Raw>>& out) {
  std::ifstream in(path);
  if (!in) throw ConfigError(path + ": cannot be read");
  std::stringstream ss;
  ss << in.rdbuf();
  toml::table root;
  try {
    root = toml::parse(ss.str(), path);
  } catch (const toml::parse_error& e) {
    throw ConfigError(path + ":" + std::to_string(e.source().begin.line) + ": invalid TOML: " +
                      std::string(e.description()));
  }
  for (const auto& [section_key, section] : root) {
    std::string section_name(section_key.str());
    if (!section.is_table()) fail(where_in(path, section), section_name, "must be a [table]");
    if (section_name == "handlers") {
      for (const auto& [kind, table] : *section.as_table()) {
        if (!table.is_table()) fail(where_in(path, table), "handlers." + std::string(kind.str()), "must be a table");
        c.handlers.push_back(parse_handler(path, std::string(kind.str()), *table.as_table()));
      }
      continue;
    }
    if (section_name == "schedules") {
      c.schedules_declared = true;
      for (const auto& [name, table] : *section.as_table()) {
        if (!table.is_table()) fail(where_in(path, table), "schedules." + std::string(name.str()), "must be a table");
        c.schedules.push_back(parse_schedule(path, std::string(name.str()), *table.as_table()));
      }
      continue;
    }
    bool known_section = std::any_of(key_specs().begin(), key_specs().end(),
                                     [&](const KeySpec& k) { return section_name == k.section; });
    if (!known_section) fail(where_in(path, section), "[" + section_name + "]", "is not a known section");
    for (const auto& [name, node] : *section.as_table()) {
      std::string key = section_name + "." + std::string(name.str());
      const KeySpec* spec = find_spec(key);
      if (!spec) fail(where_in(path, node), key, "is not a known key");
      Raw raw;
      raw.where = where_in(path, node);
      if (auto* s = node.as_string()) raw.value = s->get();
      else if (auto* i = node.as_integer()) raw.value = i->get();
      else if (auto* d = node.as_floating_point()) raw.value = d->get();
      else if (auto* b = node.as_boolean()) raw.value = b->get();
      else fail(raw.where, key, "must be a plain value, not a table or array");
      out.emplace_back(spec, std::move(raw));
    }
  }
}

void check_consistency(const Config& c) {
  std::vector<std::string> seen;
  for (const auto& h : c.handlers) {
    if (std::find(seen.begin(), seen.end(), h.kind) != seen.end())
      throw ConfigError(c.file + ":" + std::to_string(h.line) + ": handlers." + h.kind + " is defined twice");
    seen.push_back(h.kind);
  }
  if (c.retry.max_delay < c.retry.base_delay)
    throw ConfigError(c.origins.at("retry.max_delay") + ": retry.max_delay must be >= retry.base_delay (" +
                      format_duration(c.retry.base_delay) + "), got " + format_duration(c.retry.max_delay));
}

}  // namespace

std::map<std::string, std::string> process_environment() {
  std::map<std::string, std::string> env;
  for (char** e = environ; e && *e; ++e) {
    std::string kv(*e);
    auto eq = kv.find('=');
    if (eq != std::string::npos) env[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  return env;
}

// The database URL in a file (a container secret, a systemd credential): its text without the
// trailing newline. The file's path may be shown; its content never is.
std::string read_url_file(const std::string& path, const std::string& where) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError(where + ": cannot read \"" + path + "\"");
  std::string text(64 * 1024 + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<std::size_t>(in.gcount()));
  if (text.size() > 64 * 1024) throw ConfigError(where + ": \"" + path + "\" is larger than 64 KiB: not a database url");
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
  return text;
}

ConfigError::ConfigError(const std::string& what) : std::runtime_error(one_line_text(what)) {}

Config load_config(const ConfigSources& sources) {
  Config c;
  for (const auto& k : key_specs()) c.origins[k.key()] = "default";

  std::vector<std::pair<const KeySpec*, Raw>> file_values;
  if (sources.file) {
    c.file = *sources.file;
  } else if (std::ifstream(sources.default_file).good()) {
    c.file = sources.default_file;
  }
  if (!c.file.empty()) read_file(c, c.file, file_values);
  apply_level(c, file_values);

  std::vector<std::pair<const KeySpec*, Raw>> env_values;
  if (auto it = sources.env.find("DATABASE_URL"); it != sources.env.end())
    env_values.emplace_back(find_spec("database.url"), Raw{it->second, true, "environment DATABASE_URL"});
  if (auto it = sources.env.find("DATABASE_URL_FILE"); it != sources.env.end()) {
    for (const char* other : {"DATABASE_URL", "AGENTCRON_DATABASE_URL"})
      if (sources.env.count(other))
        throw ConfigError(std::string("environment DATABASE_URL_FILE: ") + other + " is set too; set one of them");
    std::string where = "environment DATABASE_URL_FILE";
    env_values.emplace_back(find_spec("database.url"), Raw{read_url_file(it->second, where), true, where});
  }
  for (const auto& [name, value] : sources.env) {
    if (!name.starts_with("AGENTCRON_")) continue;
    const KeySpec* match = nullptr;
    for (const auto& k : key_specs())
      if (env_name(k) == name) match = &k;
    if (match) {
      env_values.emplace_back(match, Raw{value, true, "environment " + name});
      continue;
    }
    // AGENTCRON_<KNOWN SECTION>_<unknown key> is a typo worth stopping for; other AGENTCRON_*
    // variables (the tests' own, say) are none of our business.
    for (const auto& k : key_specs())
      if (name.starts_with("AGENTCRON_" + upper(k.section) + "_"))
        throw ConfigError("environment " + name + ": not a known key of [" + k.section + "]");
  }
  apply_level(c, env_values);

  std::vector<std::pair<const KeySpec*, Raw>> cli_values;
  for (const auto& [key, value, option] : sources.cli) {
    const KeySpec* spec = find_spec(key);
    if (!spec) throw ConfigError("command line " + option + ": " + key + " is not a known key");
    cli_values.emplace_back(spec, Raw{value, true, "command line " + option});
  }
  if (sources.database_url_file) {
    std::string where = "command line --database-url-file";
    for (const auto& [key, value, option] : sources.cli)
      if (key == "database.url") throw ConfigError(where + ": " + option + " sets the database url too; use one");
    cli_values.emplace_back(find_spec("database.url"), Raw{read_url_file(*sources.database_url_file, where), true, where});
  }
  apply_level(c, cli_values);

  check_consistency(c);
  return c;
}

std::string describe_config(const Config& c) {
  std::ostringstream out;
  out << "# effective configuration" << (c.file.empty() ? " (no file)" : " from " + c.file) << "\n";
  const char* section = "";
  for (const auto& k : key_specs()) {
    if (std::string_view(section) != k.section) {
      section = k.section;
      out << "[" << section << "]\n";
    }
    std::string line = std::string(k.name) + " = " + show_value(c, k);
    out << line << std::string(line.size() < 44 ? 44 - line.size() : 1, ' ') << "# " << c.origins.at(k.key()) << "\n";
  }
  out << "[handlers]\n";
  std::string kinds;
  for (const auto& h : c.handlers) {
    out << h.kind << " = " << to_string(h.type);
    switch (h.type) {
      case HandlerType::notify: out << " (channel " << h.channel << ")"; break;
      case HandlerType::http: out << " (" << h.method << " " << redact_url(h.url) << ")"; break;
      case HandlerType::exec: out << " (" << h.command.front() << ")"; break;
    }
    if (h.concurrency > 0) out << " concurrency " << h.concurrency;
    out << "  # " << c.file << ":" << h.line << "\n";
    kinds += (kinds.empty() ? "" : ", ") + h.kind;
  }
  out << "# claims kinds: " << (kinds.empty() ? "(none: no [handlers.<kind>] table)" : kinds) << "\n";
  if (!c.schedules.empty()) {
    out << "[schedules]\n";
    for (const auto& sc : c.schedules)
      out << sc.name << " = \"" << sc.cron << "\" " << sc.timezone << " -> " << sc.kind << (sc.enabled ? "" : " (disabled)")
          << "  # " << c.file << ":" << sc.line << "\n";
  }
  return out.str();
}

std::vector<ConfigKeyInfo> config_keys() {
  Config defaults;
  std::vector<ConfigKeyInfo> out;
  for (const auto& k : key_specs()) {
    const char* type = std::visit(
        [](auto ref) -> const char* {
          using T = std::decay_t<decltype(ref(std::declval<Config&>()))>;
          if constexpr (std::is_same_v<T, int>) return "integer";
          else if constexpr (std::is_same_v<T, double>) return "number";
          else if constexpr (std::is_same_v<T, bool>) return "boolean";
          else if constexpr (std::is_same_v<T, Millis>) return "duration";
          else return "string";
        },
        k.ref);
    out.push_back({k.key(), type, show_value(defaults, k), k.range_doc, k.reloadable, env_name(k), k.doc});
  }
  return out;
}

Config apply_reloadable(const Config& current, const Config& next) {
  Config out = current;
  for (const auto& k : key_specs()) {
    if (!k.reloadable) continue;
    std::visit(
        [&](auto ref) {
          ref(out) = ref(const_cast<Config&>(next));
        },
        k.ref);
    out.origins[k.key()] = next.origins.at(k.key());
  }
  return out;
}

}  // namespace agentcron
