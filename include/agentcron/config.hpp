// Config: every setting of agentcron, loaded as defaults < TOML file < environment < command
// line, each value validated; a bad one is a ConfigError naming the key, the file and the line.
#pragma once
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "agentcron/duration.hpp"

namespace agentcron {

using namespace std::chrono_literals;

// A configuration error. what() is one line: "<where>: <key> <what is wrong>", where <where> is
// "file:line", "environment VAR" or "command line --option". Never contains a password.
class ConfigError : public std::runtime_error {
 public:
  // Quoted values may hold anything: the message is made one line of valid UTF-8.
  explicit ConfigError(const std::string& what);
};

struct DatabaseConfig {
  std::string url;                       // DATABASE_URL or libpq conninfo; may carry Prisma params
  int connection_limit = 4;              // connections for the whole process, LISTEN included
  Millis pool_timeout = 10s;             // longest wait for a free connection
  Millis connect_timeout = 5s;           // per connection attempt
  Millis network_timeout = 30s;          // a dead peer is noticed within this (keepalives, tcp_user_timeout)
  Millis max_lifetime = 30min;           // connections are recycled after this
  bool pgbouncer = false;                // transaction-pooling safe: nothing session-scoped
  std::string application_name = "agentcron";  // pg_stat_activity shows <this>/<worker id>
};

struct TimeoutsConfig {
  Millis claim = 15s;                // statement_timeout of claim queries
  Millis update = 10s;               // statement_timeout of every other query
  Millis lock = 2s;                  // lock_timeout of every transaction
  Millis idle_in_transaction = 30s;  // idle_in_transaction_session_timeout of every transaction
};

struct SchedulerConfig {
  std::string schedule = "*/5 * * * * *";  // poll schedule (cron, 5 or 6 fields, or @every)
  std::string timezone = "UTC";            // zone of the poll schedule
  int batch_size = 50;                     // most tasks one claim returns
  int max_batches_per_tick = 20;           // most claims one tick makes
  int concurrency = 8;                     // executor slots
  bool listen = true;                      // LISTEN agentcron_due (off in pgbouncer mode)
  Millis lease = 60s;                      // a running task's lease; extended every lease/3
  bool durable_claims = true;              // claims wait for their WAL flush (docs/performance.md)
};

struct ExecutorConfig {
  Millis task_timeout = 5min;  // a handler's time limit unless the row sets timeout_ms
  int max_payload_bytes = 1 << 20;  // a larger payload fails its task unread
};

struct RetryConfig {
  Millis base_delay = 1s;          // first retry delay
  Millis max_delay = 10min;        // cap of the retry delay
  double factor = 2;               // growth per attempt
  int breaker_threshold = 5;       // consecutive transient database failures that open the breaker
  Millis breaker_cooldown = 30s;   // how long an open breaker refuses calls
};

struct ShutdownConfig {
  Millis grace = 25s;  // time in-flight tasks get after the first SIGTERM
};

struct RetentionConfig {
  Millis succeeded = std::chrono::hours(24 * 7);  // finished succeeded tasks are deleted after this
  Millis failed = std::chrono::hours(24 * 30);    // failed and cancelled ones after this
};

struct MetricsConfig {
  std::string listen = "127.0.0.1:9464";  // host:port of /metrics, /healthz, /readyz; "" is off
};

struct LogConfig {
  std::string level = "info";   // trace, debug, info, warn, error, off
  std::string format = "auto";  // auto, text, json, journal
};

// The handler types of design.md. A new one is added here, in HandlerRegistry::from_config and
// in the keys parse_handler accepts for it.
enum class HandlerType { notify, http, exec };
std::optional<HandlerType> parse_handler_type(std::string_view name);
const char* to_string(HandlerType type);

// One [handlers.<kind>] table: which handler runs tasks of `kind`.
struct HandlerConfig {
  std::string kind;
  HandlerType type = HandlerType::notify;
  std::string channel = "agentcron_ready";  // notify: the pg_notify channel
  std::string url;                       // http
  std::string method = "POST";           // http
  std::vector<std::pair<std::string, std::string>> headers;  // http; "${VAR}" expands from env
  bool tls_verify = true;                // http
  std::string ca_file;                   // http: PEM bundle to verify the server with ("" = system's)
  std::int64_t max_response_bytes = 1 << 20;  // http: longest reply read, decompressed bytes counted
  Millis timeout = 30s;                  // http and exec
  std::vector<std::string> command;      // exec: argv, no shell
  std::string working_dir;               // exec
  std::vector<std::pair<std::string, std::string>> env;  // exec: added to the environment
  std::vector<std::string> inherit_env;  // exec: worker variables passed on beyond the allow-list
  Millis kill_after = 5s;                // exec: SIGKILL this long after SIGTERM
  int concurrency = 0;                   // at most this many of the kind at once here; 0: no limit
  int line = 0;                          // where the table starts in the file
};

// One [schedules.<name>] table: a named recurring task, synced to agentcron.schedules by every
// worker at start and on SIGHUP (see docs/operations.md).
struct ScheduleConfig {
  std::string name;
  std::string cron;
  std::string timezone = "UTC";
  std::string kind;
  std::string payload = "{}";  // a JSON object, as text
  int priority = 0;
  int max_attempts = 5;
  bool enabled = true;
  int line = 0;
  bool operator==(const ScheduleConfig&) const = default;
};

struct Config {
  DatabaseConfig database;
  TimeoutsConfig timeouts;
  SchedulerConfig scheduler;
  ExecutorConfig executor;
  RetryConfig retry;
  ShutdownConfig shutdown;
  RetentionConfig retention;
  MetricsConfig metrics;
  LogConfig log;
  std::vector<HandlerConfig> handlers;
  std::vector<ScheduleConfig> schedules;
  bool schedules_declared = false;  // the file has a [schedules] table (empty or not): it owns them
  std::string file;                             // the file that was read, "" for none
  std::map<std::string, std::string> origins;   // "section.key" -> where its value came from
};

// Where the configuration comes from. The CLI fills it from argv and the process environment.
struct ConfigSources {
  std::optional<std::string> file;      // --config; read and required when set
  std::string default_file = "/etc/agentcron/agentcron.toml";  // read when present and no --config
  std::map<std::string, std::string> env;  // DATABASE_URL, AGENTCRON_<SECTION>_<KEY>
  // Command-line settings in order: (key "section.name", value text, option that set it).
  std::vector<std::tuple<std::string, std::string, std::string>> cli;
  // --database-url-file: database.url read from this file at the command line's level (like
  // DATABASE_URL_FILE in `env`), so that the URL need not sit in argv or the environment.
  std::optional<std::string> database_url_file;
};

Config load_config(const ConfigSources& sources);

// This process's environment as a map (for ConfigSources::env and for child processes).
std::map<std::string, std::string> process_environment();

// What `config check` prints: every key with its effective value (secrets redacted) and where
// it came from, then the handlers and the kinds this worker claims.
std::string describe_config(const Config& config);

// The documentation of every key, for docs/configuration.md and its test.
struct ConfigKeyInfo {
  std::string key;          // section.name
  std::string type;         // integer, number, boolean, duration, string
  std::string default_value;
  std::string range;        // "1–1000", "> 0", allowed values…
  bool reloadable;
  std::string env;          // AGENTCRON_SECTION_NAME
  std::string doc;
};
std::vector<ConfigKeyInfo> config_keys();

// The reloadable settings of `next` applied onto `current` (SIGHUP); the rest stays.
Config apply_reloadable(const Config& current, const Config& next);

}  // namespace agentcron
