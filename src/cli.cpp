// The agentcron command line (see cli.hpp): global options anywhere, then one command with its
// own options. Errors are one line on stderr and a sysexits code.
#include "agentcron/cli.hpp"

#include <malloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/program_options.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "agentcron/config.hpp"
#include "agentcron/cron.hpp"
#include "agentcron/database_url.hpp"
#include "agentcron/secrets.hpp"
#include "agentcron/handlers/handler.hpp"
#include "agentcron/log.hpp"
#include "agentcron/migrator.hpp"
#include "agentcron/pool.hpp"
#include "agentcron/retry.hpp"
#include "agentcron/signals.hpp"
#include "agentcron/systemd_notify.hpp"
#include "agentcron/pg_task_store.hpp"
#include "agentcron/probe.hpp"
#include "agentcron/reaper.hpp"
#include "agentcron/worker.hpp"
#include "cli_parts.hpp"

namespace agentcron {
namespace po = boost::program_options;

namespace cli_parts {

// Parses a command's own options from its arguments; --help prints them.
po::variables_map parse_command(const std::string& name, const std::vector<std::string>& args,
                                const po::options_description& desc, const po::positional_options_description& pos,
                                const std::string& synopsis, bool& help) {
  po::options_description all(desc);
  all.add_options()("help,h", "print this help");
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(all).positional(pos).run(), vm);
  po::notify(vm);
  help = vm.count("help") > 0;
  if (help) std::cout << "usage: agentcron " << name << " " << synopsis << "\n\n" << all << "\n";
  return vm;
}

Config load(const Globals& g) { return load_config(g.sources); }

// Whether stderr is the journal's stream ($JOURNAL_STREAM names its device:inode): a child that
// inherited the variable with stderr redirected elsewhere is not logging to the journal.
static bool stderr_is_journal() {
  const char* stream = std::getenv("JOURNAL_STREAM");
  struct stat st {};
  if (!stream || ::fstat(2, &st) != 0) return false;
  return std::string(stream) == std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);
}

std::unique_ptr<Logger> make_logger(const Config& c) {
  auto format = resolve_log_format(c.log.format, ::isatty(2), stderr_is_journal());
  LogLevel level = parse_log_level(c.log.level).value_or(LogLevel::info);
  // journal: native entries, each log field a journal field (journalctl TASK_ID=7).
  if (format == LogFormat::journal) return std::make_unique<Logger>(level, systemd_journal_writer());
  return std::make_unique<Logger>(format.value_or(LogFormat::json), level);
}

}  // namespace cli_parts

using namespace cli_parts;

namespace {

const char* kUsage =
    "usage: agentcron [global options] [COMMAND] [command options]\n"
    "\n"
    "commands:\n"
    "  run            the long-running worker (the default command)\n"
    "  once           claim and run one batch (--drain: until nothing is due) and exit\n"
    "  migrate        apply pending migrations (--status lists them)\n"
    "  enqueue        add a task: --kind K [--payload JSON] [--at TIME | --in DURATION] ...\n"
    "  status         queue depth by status, due now, oldest due age, connections in use\n"
    "  cron next      EXPR [--from ISO8601] [--count N] [--timezone TZ]: next fire times\n"
    "  config check   validate and print the effective configuration, secrets redacted\n"
    "  config example print a configuration file with every key at its default\n"
    "  probe          ask the running worker's /healthz (metrics.listen): exit 0 or 1\n"
    "  tasks          list, show, cancel, retry, approve, reject or purge tasks\n"
    "  kinds          pause or resume a kind for the whole fleet, list the paused ones\n"
    "  schedules      list the named schedules, run one now, pause or resume one\n"
    "  doctor         check connections, pooler, timeouts, clock, table and kinds; exit 1 on a failure\n"
    "\n"
    "`agentcron COMMAND --help` shows a command's options.\n"
    "exit codes: 0 ok, 1 `once` ran and some task failed, or an admin command refused an id or\n"
    "            name (unknown, or in the wrong state), 64 usage, 65 changed migration,\n"
    "            69 database unavailable, 78 bad configuration\n";

po::options_description global_options() {
  po::options_description g("global options");
  g.add_options()
      ("config", po::value<std::string>(), "configuration file (default /etc/agentcron/agentcron.toml when present)")
      ("database-url", po::value<std::string>(), "database URL or libpq conninfo (overrides DATABASE_URL)")
      ("database-url-file", po::value<std::string>(), "read the database URL from this file (keeps it out of argv)")
      ("log-level", po::value<std::string>(), "trace, debug, info, warn, error, off")
      ("log-format", po::value<std::string>(), "text, json, journal (default: auto)")
      ("set", po::value<std::vector<std::string>>()->composing(), "SECTION.KEY=VALUE: set any configuration key")
      ("version", "print the version and exit")
      ("help,h", "print this help and exit");
  return g;
}

// Parses the global options (anywhere on the line) and splits off the command.
std::optional<Globals> parse_globals(int argc, char** argv, bool& help, bool& version) {
  po::options_description g = global_options();
  po::options_description hidden;
  hidden.add_options()("command", po::value<std::string>())("args", po::value<std::vector<std::string>>());
  po::options_description all;
  all.add(g).add(hidden);
  po::positional_options_description pos;
  pos.add("command", 1).add("args", -1);
  po::parsed_options parsed = po::command_line_parser(argc, argv).options(all).positional(pos).allow_unregistered().run();
  po::variables_map vm;
  po::store(parsed, vm);
  po::notify(vm);
  Globals gl;
  help = vm.count("help") > 0;
  version = vm.count("version") > 0;
  if (vm.count("config")) gl.sources.file = vm["config"].as<std::string>();
  gl.sources.env = process_environment();
  if (vm.count("database-url")) gl.sources.cli.emplace_back("database.url", vm["database-url"].as<std::string>(), "--database-url");
  if (vm.count("database-url-file")) gl.sources.database_url_file = vm["database-url-file"].as<std::string>();
  if (vm.count("log-level")) gl.sources.cli.emplace_back("log.level", vm["log-level"].as<std::string>(), "--log-level");
  if (vm.count("log-format")) gl.sources.cli.emplace_back("log.format", vm["log-format"].as<std::string>(), "--log-format");
  if (vm.count("set")) {
    for (const auto& kv : vm["set"].as<std::vector<std::string>>()) {
      auto eq = kv.find('=');
      if (eq == std::string::npos || eq == 0) throw UsageError("--set needs SECTION.KEY=VALUE, got \"" + kv + "\"");
      gl.sources.cli.emplace_back(kv.substr(0, eq), kv.substr(eq + 1), "--set " + kv.substr(0, eq));
    }
  }
  std::vector<std::string> rest = po::collect_unrecognized(parsed.options, po::include_positional);
  if (!rest.empty() && !rest.front().starts_with("-")) {
    gl.command = rest.front();
    gl.command_given = true;
    rest.erase(rest.begin());
  }
  if (gl.command.empty()) gl.command = "run";
  gl.args = std::move(rest);
  return gl;
}




ExitCode cmd_cron(const Globals& g) {
  if (g.args.empty() || (g.args.front() != "next" && g.args.front() != "--help" && g.args.front() != "-h"))
    throw UsageError("cron: expected `cron next EXPR`");
  po::options_description d("cron next options");
  d.add_options()
      ("expr", po::value<std::string>(), "the cron expression (quote it)")
      ("from", po::value<std::string>(), "start after this time, ISO-8601 (default now)")
      ("count", po::value<int>()->default_value(5), "how many fire times")
      ("timezone", po::value<std::string>()->default_value("UTC"), "IANA time zone of the expression");
  po::positional_options_description pos;
  pos.add("expr", 1);
  std::vector<std::string> rest(g.args.begin() + (g.args.front() == "next" ? 1 : 0), g.args.end());
  bool help = false;
  auto vm = parse_command("cron next", rest, d, pos, "EXPR [--from ISO8601] [--count N] [--timezone TZ]\n"
                          "example: agentcron cron next '30 2 * * *' --timezone Europe/Berlin --count 3", help);
  if (help) return ExitCode::ok;
  if (!vm.count("expr")) throw UsageError("cron next: missing EXPR");
  int count = vm["count"].as<int>();
  if (count < 1 || count > 100000) throw UsageError("cron next: --count must be between 1 and 100000");
  auto from = std::chrono::system_clock::now();
  if (vm.count("from")) {
    auto t = parse_iso8601(vm["from"].as<std::string>());
    if (!t) throw UsageError("cron next: --from must be ISO-8601 such as 2026-03-07T12:00:00Z, got \"" + vm["from"].as<std::string>() + "\"");
    from = *t;
  }
  try {
    CronSchedule s = CronSchedule::parse(vm["expr"].as<std::string>());
    TimeZone zone = TimeZone::locate(vm["timezone"].as<std::string>());
    std::string out;
    for (int i = 0; i < count; ++i) {
      from = s.next(from, zone);
      out += format_utc(std::chrono::floor<std::chrono::seconds>(from)) + "\n";
    }
    std::cout << out;
  } catch (const CronError& e) {
    std::cerr << "agentcron: " << e.what() << "\n";
    return ExitCode::usage;
  }
  return ExitCode::ok;
}

// `config example`: every key with its default, commented, as TOML.
std::string example_config() {
  std::string out =
      "# agentcron configuration: every key with its default. Precedence: defaults < this file <\n"
      "# environment (DATABASE_URL, AGENTCRON_<SECTION>_<KEY>) < command line. docs/configuration.md\n"
      "# explains each key.\n";
  std::string section;
  for (const auto& k : config_keys()) {
    std::string sec = k.key.substr(0, k.key.find('.'));
    if (sec != section) {
      out += "\n[" + sec + "]\n";
      section = sec;
    }
    out += "# " + k.doc + " (" + k.type + (k.range.empty() ? "" : ", " + k.range) + (k.reloadable ? ", SIGHUP reloads" : "") + ")\n";
    out += k.key.substr(k.key.find('.') + 1) + " = " + k.default_value + "\n";
  }
  out +=
      "\n# Handlers: a worker claims only the kinds it has a handler for.\n"
      "# [handlers.mark_ready]\n# type = \"notify\"\n# channel = \"agentcron_ready\"\n";
  return out;
}

// `config docs`: the key table of docs/configuration.md.
std::string docs_table() {
  std::string out = "| key | type | default | range | SIGHUP | environment | meaning |\n|---|---|---|---|---|---|---|\n";
  for (const auto& k : config_keys())
    out += "| `" + k.key + "` | " + k.type + " | `" + k.default_value + "` | " + k.range + " | " +
           (k.reloadable ? "reloads" : "restart") + " | `" + k.env + "` | " + k.doc + " |\n";
  return out;
}

ExitCode cmd_config(const Globals& g) {
  if (!g.args.empty() && (g.args.front() == "--help" || g.args.front() == "-h" ||
                          (g.args.size() > 1 && (g.args[1] == "--help" || g.args[1] == "-h")))) {
    std::cout << "usage: agentcron config check | example\n\n"
                 "  check    validate and print the effective configuration (secrets redacted), the kinds\n"
                 "           claimed, the schedules and the shutdown budget; exit 78 when it is bad\n"
                 "  example  print a configuration file with every key at its default\n\n"
                 "example: agentcron --config /etc/agentcron/agentcron.toml config check\n";
    return ExitCode::ok;
  }
  if (!g.args.empty() && g.args.front() == "example") {
    std::cout << example_config();
    return ExitCode::ok;
  }
  if (!g.args.empty() && g.args.front() == "docs") {
    std::cout << docs_table();
    return ExitCode::ok;
  }
  if (g.args.empty() || g.args.front() != "check") throw UsageError("config: expected `config check` (or `config example`)");
  Config c = load(g);
  auto log = make_logger(c);
  HandlerRegistry::from_config(c, *log);  // a handler this build cannot run is a config error too
  std::cout << describe_config(c);
  // What a supervisor must allow for a stop (systemd TimeoutStopSec, Kubernetes
  // terminationGracePeriodSeconds): the worst case, with the database gone (docs/operations.md).
  std::cout << "# shutdown budget: " << format_duration(std::chrono::ceil<std::chrono::seconds>(shutdown_budget(c)))
            << " at most from SIGTERM to exit\n";
  return ExitCode::ok;
}

ExitCode cmd_migrate(const Globals& g) {
  po::options_description d("migrate options");
  d.add_options()("status", "list applied and pending migrations instead of applying them");
  bool help = false;
  auto vm = parse_command("migrate", g.args, d, {}, "[--status]\nexample: agentcron --database-url-file /run/secrets/db migrate", help);
  if (help) return ExitCode::ok;
  Config c = load(g);
  auto log = make_logger(c);
  AdminDb db(c, *log);
  Migrator m(db.store, *log);
  if (vm.count("status")) {
    for (const auto& s : m.status()) {
      std::printf("%04d_%-24s %s%s\n", s.version, s.name.c_str(), s.applied ? ("applied " + s.applied_at).c_str() : "pending",
                  s.changed ? "  CHANGED since applied" : "");
    }
    return ExitCode::ok;
  }
  int n = m.migrate();
  std::cout << (n == 0 ? "schema is up to date" : "applied " + std::to_string(n) + " migration(s)") << "\n";
  return ExitCode::ok;
}

po::options_description enqueue_options() {
  po::options_description d("enqueue options");
  d.add_options()
      ("kind", po::value<std::string>(), "the task kind (selects the handler)")
      ("payload", po::value<std::string>()->default_value("{}"), "JSON object given to the handler")
      ("at", po::value<std::string>(), "run at this ISO-8601 time")
      ("in", po::value<std::string>(), "run after this duration (\"30s\", \"5m\")")
      ("cron", po::value<std::string>(), "recurring schedule")
      ("timezone", po::value<std::string>()->default_value("UTC"), "time zone of --cron")
      ("priority", po::value<int>()->default_value(0), "higher runs first (-32768..32767)")
      ("max-attempts", po::value<int>()->default_value(5), "attempts before the task fails")
      ("timeout", po::value<std::string>(), "handler time limit for this task (\"30s\")")
      ("agent", po::value<std::string>(), "owner agent id")
      ("dedup-key", po::value<std::string>(), "skip if a pending or running task has this key")
      ("approval", po::value<std::string>()->default_value("approved"), "approved, pending or rejected");
  return d;
}

// The task an `enqueue` command line describes, every option checked (UsageError naming it).
EnqueueParams enqueue_params(const po::variables_map& vm) {
  if (!vm.count("kind") || vm["kind"].as<std::string>().empty()) throw UsageError("enqueue: --kind is required");
  EnqueueParams p;
  p.kind = vm["kind"].as<std::string>();
  p.payload = vm["payload"].as<std::string>();
  auto json = nlohmann::json::parse(p.payload, nullptr, false);
  if (json.is_discarded() || !json.is_object()) throw UsageError("enqueue: --payload must be a JSON object, got " + p.payload);
  if (vm.count("at") && vm.count("in")) throw UsageError("enqueue: give --at or --in, not both");
  if (vm.count("at")) {
    p.at = parse_iso8601(vm["at"].as<std::string>());
    if (!p.at) throw UsageError("enqueue: --at must be ISO-8601 such as 2026-03-07T12:00:00Z");
  }
  if (vm.count("in")) {
    std::string why;
    p.in = parse_duration(vm["in"].as<std::string>(), &why);
    if (!p.in) throw UsageError("enqueue: --in: " + why);
  }
  if (vm.count("timeout")) {
    std::string why;
    auto t = parse_duration(vm["timeout"].as<std::string>(), &why);
    if (!t || t->count() <= 0 || t->count() > INT32_MAX) throw UsageError("enqueue: --timeout must be a duration > 0");
    p.timeout_ms = static_cast<int>(t->count());
  }
  p.timezone = vm["timezone"].as<std::string>();
  if (!TimeZone::find(p.timezone)) throw UsageError("enqueue: unknown time zone \"" + p.timezone + "\"");
  if (vm.count("cron")) {
    try {
      CronSchedule::parse(vm["cron"].as<std::string>());
    } catch (const CronError& e) {
      throw UsageError(std::string("enqueue: ") + e.what());
    }
    p.cron = vm["cron"].as<std::string>();
  }
  p.priority = vm["priority"].as<int>();
  if (p.priority < -32768 || p.priority > 32767) throw UsageError("enqueue: --priority must be between -32768 and 32767");
  p.max_attempts = vm["max-attempts"].as<int>();
  if (p.max_attempts < 1) throw UsageError("enqueue: --max-attempts must be at least 1");
  if (vm.count("agent")) p.agent_id = vm["agent"].as<std::string>();
  if (vm.count("dedup-key")) p.dedup_key = vm["dedup-key"].as<std::string>();
  p.approval = vm["approval"].as<std::string>();
  if (p.approval != "approved" && p.approval != "pending" && p.approval != "rejected")
    throw UsageError("enqueue: --approval must be approved, pending or rejected");
  return p;
}

ExitCode cmd_enqueue(const Globals& g) {
  po::options_description d = enqueue_options();
  bool help = false;
  auto vm = parse_command("enqueue", g.args, d, {}, "--kind K [options]\n"
                          "example: agentcron enqueue --kind report --payload '{\"to\":\"ops\"}' --cron '30 2 * * *' "
                          "--timezone Europe/Berlin", help);
  if (help) return ExitCode::ok;
  EnqueueParams p = enqueue_params(vm);
  Config c = load(g);
  auto log = make_logger(c);
  AdminDb db(c, *log);
  // A recurring task without --at or --in starts at its first fire time.
  if (p.cron && !p.at && !p.in) p.at = CronSchedule::parse(*p.cron).next(db.store.now(), TimeZone::locate(p.timezone));
  EnqueueResult r = db.store.enqueue(p);
  if (r.deduplicated) std::cout << "task " << r.id << " already pending with dedup key " << *p.dedup_key << "\n";
  else std::cout << "enqueued task " << r.id << "\n";
  return ExitCode::ok;
}

// `probe [--ready] [--timeout D]`: exit 0 when the worker's /healthz (or /readyz) answers 200, 1
// otherwise (a container HEALTHCHECK's convention), 78 when metrics.listen is not set.
ExitCode cmd_probe(const Globals& g) {
  po::options_description d("probe options");
  d.add_options()("ready", "ask /readyz (claiming) instead of /healthz (alive)")(
      "timeout", po::value<std::string>()->default_value("3s"), "how long to wait for the answer");
  bool help = false;
  auto vm = parse_command("probe", g.args, d, {}, "[--ready] [--timeout DURATION]\nexample: agentcron probe --ready --timeout 2s", help);
  if (help) return ExitCode::ok;
  Config c = load(g);
  if (c.metrics.listen.empty())
    throw ConfigError("probe: metrics.listen is not set; the probe asks the worker's /healthz there");
  auto timeout = parse_duration(vm["timeout"].as<std::string>());
  if (!timeout || *timeout <= Millis(0)) throw UsageError("probe: --timeout must be a duration such as \"3s\"");
  std::string path = vm.count("ready") ? "/readyz" : "/healthz";
  if (auto problem = probe_worker(c.metrics.listen, path, *timeout)) {
    std::cerr << "probe: " << *problem << "\n";
    return ExitCode::unhealthy;
  }
  std::cout << "ok: http://" << c.metrics.listen << path << "\n";
  return ExitCode::ok;
}

ExitCode cmd_status(const Globals& g) {
  bool help = false;
  parse_command("status", g.args, {}, {}, "\nexample: agentcron --config /etc/agentcron/agentcron.toml status", help);
  if (help) return ExitCode::ok;
  Config c = load(g);
  auto log = make_logger(c);
  AdminDb db(c, *log);
  QueueStatus s = db.store.status();
  // Estimates (a large table) carry a "~"; running tasks are always counted.
  for (const auto& [name, n] : s.by_status)
    std::printf("%-10s %s%lld\n", name.c_str(), s.estimated && name != "running" ? "~" : "", static_cast<long long>(n));
  std::printf("due now    %lld%s\n", static_cast<long long>(s.due_now), s.due_capped ? "+" : "");
  if (s.oldest_due_seconds) std::printf("oldest due %.1fs ago\n", *s.oldest_due_seconds);
  else std::printf("oldest due -\n");
  std::printf("connections %lld of %lld in use (%lld agentcron)\n", static_cast<long long>(s.server_connections),
              static_cast<long long>(s.max_connections), static_cast<long long>(s.agentcron_connections));
  return ExitCode::ok;
}

ExitCode cmd_worker(const Globals& g, bool one_shot, const std::function<void(HandlerRegistry&)>& extra) {
  po::options_description d(one_shot ? "once options" : "run options");
  d.add_options()("migrate", "apply pending migrations before starting");
  if (one_shot)
    d.add_options()("drain", "claim and run until nothing is due")(
        "max-tasks", po::value<int>(), "claim at most this many tasks");
  bool help = false;
  auto vm = parse_command(one_shot ? "once" : "run", g.args, d, {}, one_shot ? "[--drain] [--max-tasks N] [--migrate]\nexample: agentcron once --drain --max-tasks 1000"
                                   : "[--migrate]\nexample: agentcron --config /etc/agentcron/agentcron.toml run", help);
  if (help) return ExitCode::ok;
  WorkerRunOptions opts;
  opts.migrate = vm.count("migrate") > 0;
  if (one_shot) {
    opts.drain = vm.count("drain") > 0;
    if (vm.count("max-tasks")) {
      opts.max_tasks = vm["max-tasks"].as<int>();
      if (opts.max_tasks < 1) throw UsageError("once: --max-tasks must be at least 1");
    }
  }
  block_signals();  // before any thread starts: only the signal watcher receives them
  // A handful of threads do short allocations: two malloc arenas are plenty, and each arena a
  // thread would otherwise create costs resident memory for as long as the process lives.
  mallopt(M_ARENA_MAX, 2);
  Config c = load(g);
  auto log = make_logger(c);
  HandlerRegistry handlers = HandlerRegistry::from_config(c, *log);
  if (extra) extra(handlers);
  Worker worker(c, std::move(handlers), *log);
  SignalWatcher signals([&](int n) { worker.request_shutdown(n); },
                        [&] {
                          try {
                            worker.reload(load(g));
                          } catch (const ConfigError& e) {
                            log->error("reload failed; keeping the old configuration", {{"error", e.what()}});
                          } catch (const CronError& e) {
                            log->error("reload failed; keeping the old configuration", {{"error", e.what()}});
                          }
                        });
  signals.start();
  // Orphans an exec handler's program leaves behind come to this process (PID 1 in a container,
  // or a child subreaper anywhere) and are waited for, not left as zombies.
  become_subreaper();
  Reaper reaper({}, *log);
  reaper.start();
  return one_shot ? worker.once(opts) : worker.run(opts);
}

ExitCode run_command(int argc, char** argv, const std::function<void(HandlerRegistry&)>& register_handlers) {
  std::string command;  // for the hint on an unmigrated database
  try {
    bool help = false, version = false;
    auto g = parse_globals(argc, argv, help, version);
    if (version) {
      std::cout << "agentcron " << AGENTCRON_VERSION << "\n";
      return ExitCode::ok;
    }
    if (help && !g->command_given) {
      std::cout << kUsage << "\n" << global_options() << "\n";
      return ExitCode::ok;
    }
    if (help) g->args.push_back("--help");
    const std::string& cmd = g->command;
    command = cmd;
    if (cmd == "run") return cmd_worker(*g, false, register_handlers);
    if (cmd == "once") return cmd_worker(*g, true, register_handlers);
    if (cmd == "migrate") return cmd_migrate(*g);
    if (cmd == "enqueue") return cmd_enqueue(*g);
    if (cmd == "status") return cmd_status(*g);
    if (cmd == "probe") return cmd_probe(*g);
    if (cmd == "cron") return cmd_cron(*g);
    if (cmd == "config") return cmd_config(*g);
    if (cmd == "tasks") return cmd_tasks(*g);
    if (cmd == "kinds") return cmd_kinds(*g);
    if (cmd == "schedules") return cmd_schedules(*g);
    if (cmd == "doctor") return cmd_doctor(*g);
    throw UsageError("unknown command \"" + cmd + "\"");
  } catch (const UsageError& e) {
    std::cerr << "agentcron: usage: " << e.what() << "\n(see agentcron --help)\n";
    return ExitCode::usage;
  } catch (const po::error& e) {
    std::cerr << "agentcron: usage: " << e.what() << "\n(see agentcron --help)\n";
    return ExitCode::usage;
  } catch (const ConfigError& e) {
    std::cerr << "agentcron: config error: " << e.what() << "\n";
    return ExitCode::config;
  } catch (const MigrationChanged& e) {
    std::cerr << "agentcron: database error: " << scrub_secrets(e.what()) << "\n";
    return ExitCode::data_error;
  } catch (const DatabaseError& e) {
    // A schema, table, column or function of ours missing: a database this binary has not migrated.
    const std::string& state = e.sqlstate();
    bool unmigrated = command != "migrate" && (state == "3F000" || state == "42P01" || state == "42703" || state == "42883");
    std::cerr << "agentcron: database error: " << scrub_secrets(e.what())
              << (state.empty() ? "" : " (SQLSTATE " + state + ")")
              << (unmigrated ? "; is the schema migrated? run `agentcron migrate`" : "") << "\n";
    return ExitCode::unavailable;
  } catch (const std::exception& e) {
    std::cerr << "agentcron: internal error: " << scrub_secrets(e.what()) << "\n";
    return ExitCode::software;
  }
}

}  // namespace

int run_cli(int argc, char** argv, const std::function<void(HandlerRegistry&)>& register_handlers) {
  return to_int(run_command(argc, argv, register_handlers));
}

}  // namespace agentcron
