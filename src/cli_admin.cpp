// The administrative commands: `tasks`, `kinds` and `schedules` (see admin.hpp for what each does
// in the database). Listings print a table, or with --format json one JSON array. A refused id or
// name (unknown, or in the wrong state) is one line on stderr naming it, and makes the command
// exit 1 once the others are done.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <functional>
#include <iostream>

#include "agentcron/admin.hpp"
#include "agentcron/doctor.hpp"
#include "agentcron/utf8.hpp"
#include "cli_parts.hpp"

namespace agentcron::cli_parts {

namespace {

// A row's JSON; a row the parser refuses (a SQL_ASCII database's bytes) is shown as its text.
nlohmann::ordered_json parsed_row(const std::string& row) {
  auto j = nlohmann::ordered_json::parse(row, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return {{"row", valid_utf8(row)}};
  return j;
}

// A value as a terminal may show it: rows hold what agents and programs wrote (an exec program's
// output in last_error), so control characters and escape sequences are written out as \x1b…,
// and long values are cut on a character boundary.
std::string shown(const nlohmann::ordered_json& v, std::size_t max_bytes) {
  std::string s = v.is_null() ? "-" : v.is_string() ? v.get<std::string>() : v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  s = one_line_text(s);
  if (s.size() > max_bytes) s = std::string(utf8_prefix(s, max_bytes - 3)) + "...";
  return s;
}

// Prints JSON rows as an aligned table (`columns`, in that order; an empty list: every key of the
// first row) or as one JSON array.
void print_rows(const JsonRows& rows, bool json, std::vector<std::string> columns = {}) {
  if (json) {
    std::cout << "[";
    for (std::size_t i = 0; i < rows.size(); ++i) std::cout << (i ? ",\n " : "") << terminal_json(rows[i]);
    std::cout << "]\n";
    return;
  }
  std::vector<nlohmann::ordered_json> parsed;
  for (const auto& r : rows) parsed.push_back(parsed_row(r));
  if (columns.empty() && !parsed.empty())
    for (const auto& [k, v] : parsed.front().items()) columns.push_back(k);
  auto cell = [](const nlohmann::ordered_json& v) { return shown(v, 60); };
  std::vector<std::size_t> width;
  for (const auto& c : columns) width.push_back(c.size());
  std::vector<std::vector<std::string>> cells;
  for (const auto& p : parsed) {
    std::vector<std::string> line;
    for (std::size_t i = 0; i < columns.size(); ++i) {
      line.push_back(p.contains(columns[i]) ? cell(p[columns[i]]) : "-");
      width[i] = std::max(width[i], line.back().size());
    }
    cells.push_back(std::move(line));
  }
  auto print_line = [&](const std::vector<std::string>& line) {
    std::string out;
    for (std::size_t i = 0; i < line.size(); ++i) {
      out += line[i];
      if (i + 1 < line.size()) out += std::string(width[i] - line[i].size() + 2, ' ');
    }
    std::cout << out << "\n";
  };
  print_line(columns);
  for (const auto& line : cells) print_line(line);
  if (rows.empty()) std::cout << "(none)\n";
}

// A JSON object printed as "key: value" lines.
void print_record(const std::string& row) {
  auto obj = parsed_row(row);
  std::size_t w = 0;
  for (const auto& [k, v] : obj.items()) w = std::max(w, k.size());
  for (const auto& [k, v] : obj.items()) std::cout << k << ":" << std::string(w - k.size() + 1, ' ') << shown(v, 4096) << "\n";
}

bool json_format(const po::variables_map& vm, const std::string& cmd) {
  std::string f = vm["format"].as<std::string>();
  if (f != "table" && f != "json") throw UsageError(cmd + ": --format must be table or json, got \"" + f + "\"");
  return f == "json";
}

std::int64_t parse_id(const std::string& cmd, const std::string& text) {
  std::int64_t id = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), id);
  if (ec != std::errc() || p != text.data() + text.size() || id <= 0)
    throw UsageError(cmd + ": a task id is a positive whole number, got \"" + text + "\"");
  return id;
}

const char* kStatuses[] = {"pending", "running", "succeeded", "failed", "cancelled"};

const char* kTasksUsage =
    "usage: agentcron tasks list [--status S] [--kind K] [--limit N] [--format table|json]\n"
    "       agentcron tasks show ID [--format table|json]\n"
    "       agentcron tasks cancel|retry|approve|reject ID...\n"
    "       agentcron tasks purge --status succeeded|failed|cancelled --older-than DURATION\n"
    "\n"
    "  list     the newest tasks first (50 unless --limit)\n"
    "  show     one task's row and its runs\n"
    "  cancel   pending or running -> cancelled (a running handler is stopped), never retried\n"
    "  retry    failed or cancelled -> pending now, attempts reset\n"
    "  approve  a task awaiting approval runs (at once when due); reject: it ends cancelled\n"
    "  purge    deletes finished tasks of a status older than the duration, in batches\n"
    "\n"
    "example: agentcron tasks list --status failed --kind report\n"
    "example: agentcron tasks show 42\n"
    "example: agentcron tasks cancel 42 43\n"
    "example: agentcron tasks purge --status succeeded --older-than 3d\n"
    "\n"
    "exit: 0 done, 1 an id was unknown or in the wrong state (named on stderr; the rest were done),\n"
    "      64 usage, 69 database unavailable\n";

// cancel/retry/approve/reject of each id: the refused ones named on stderr.
ExitCode act_on_ids(const Globals& g, const std::string& verb, TaskAction action, const std::vector<std::string>& ids) {
  if (ids.empty()) throw UsageError("tasks " + verb + ": give one or more task ids");
  std::vector<std::int64_t> parsed;
  for (const auto& text : ids) parsed.push_back(parse_id("tasks " + verb, text));
  Config c = load(g);
  auto log = make_logger(c);
  AdminDb db(c, *log);
  bool refused = false;
  const char* done = action == TaskAction::cancel    ? "cancelled"
                     : action == TaskAction::retry   ? "pending again"
                     : action == TaskAction::approve ? "approved"
                                                     : "rejected";
  for (std::int64_t id : parsed) {
    try {
      bool changed = act_on_task(db.store, action, id);
      std::cout << "task " << id << ": " << done << (changed ? "" : " already") << "\n";
    } catch (const AdminError& e) {
      refused = true;
      std::cerr << "agentcron: tasks " << verb << ": " << e.what() << "\n";
    }
  }
  return refused ? ExitCode::task_failed : ExitCode::ok;
}

}  // namespace

ExitCode cmd_tasks(const Globals& g) {
  if (g.args.empty() || g.args[0] == "--help" || g.args[0] == "-h") {
    if (g.args.empty()) throw UsageError("tasks: give a subcommand: list, show, cancel, retry, approve, reject or purge");
    std::cout << kTasksUsage;
    return ExitCode::ok;
  }
  std::string sub = g.args[0];
  std::vector<std::string> rest(g.args.begin() + 1, g.args.end());
  bool wants_help = std::find(rest.begin(), rest.end(), "--help") != rest.end() ||
                    std::find(rest.begin(), rest.end(), "-h") != rest.end();
  if (sub == "cancel" || sub == "retry" || sub == "approve" || sub == "reject") {
    if (wants_help) {
      std::cout << kTasksUsage;
      return ExitCode::ok;
    }
    TaskAction a = sub == "cancel" ? TaskAction::cancel
                   : sub == "retry" ? TaskAction::retry
                   : sub == "approve" ? TaskAction::approve
                                      : TaskAction::reject;
    return act_on_ids(g, sub, a, rest);
  }
  po::options_description d("tasks " + sub + " options");
  bool help = false;
  if (sub == "list") {
    d.add_options()("status", po::value<std::string>(), "only tasks of this status")(
        "kind", po::value<std::string>(), "only tasks of this kind")(
        "limit", po::value<int>()->default_value(50), "at most this many (1-10000)")(
        "format", po::value<std::string>()->default_value("table"), "table or json");
    auto vm = parse_command("tasks list", rest, d, {}, "[--status S] [--kind K] [--limit N] [--format table|json]\n"
                                                       "example: agentcron tasks list --status failed --limit 20", help);
    if (help) return ExitCode::ok;
    bool json = json_format(vm, "tasks list");
    TaskQuery q;
    if (vm.count("status")) {
      q.status = vm["status"].as<std::string>();
      if (std::find(std::begin(kStatuses), std::end(kStatuses), *q.status) == std::end(kStatuses))
        throw UsageError("tasks list: --status must be pending, running, succeeded, failed or cancelled, got \"" +
                         *q.status + "\"");
    }
    if (vm.count("kind")) q.kind = vm["kind"].as<std::string>();
    q.limit = vm["limit"].as<int>();
    if (q.limit < 1 || q.limit > 10000) throw UsageError("tasks list: --limit must be from 1 to 10000");
    Config c = load(g);
    auto log = make_logger(c);
    AdminDb db(c, *log);
    print_rows(list_tasks(db.store, q), json,
               {"id", "kind", "status", "approval", "priority", "attempts", "scheduled_for", "last_error"});
    return ExitCode::ok;
  }
  if (sub == "show") {
    d.add_options()("id", po::value<std::string>(), "the task id")(
        "format", po::value<std::string>()->default_value("table"), "table or json");
    po::positional_options_description pos;
    pos.add("id", 1);
    auto vm = parse_command("tasks show", rest, d, pos, "ID [--format table|json]\nexample: agentcron tasks show 42", help);
    if (help) return ExitCode::ok;
    if (!vm.count("id")) throw UsageError("tasks show: give a task id");
    std::int64_t id = parse_id("tasks show", vm["id"].as<std::string>());
    bool json = json_format(vm, "tasks show");
    Config c = load(g);
    auto log = make_logger(c);
    AdminDb db(c, *log);
    auto row = show_task(db.store, id);
    if (!row) {
      std::cerr << "agentcron: tasks show: no task " << id << "\n";
      return ExitCode::task_failed;
    }
    JsonRows runs = task_runs(db.store, id, 20);
    if (json) {
      std::cout << "{\"task\": " << terminal_json(*row) << ", \"runs\": [";
      for (std::size_t i = 0; i < runs.size(); ++i) std::cout << (i ? ", " : "") << terminal_json(runs[i]);
      std::cout << "]}\n";
    } else {
      print_record(*row);
      std::cout << "\nruns (newest first):\n";
      print_rows(runs, false, {"attempt", "outcome", "worker", "started_at", "finished_at", "error"});
    }
    return ExitCode::ok;
  }
  if (sub == "purge") {
    d.add_options()("status", po::value<std::string>(), "succeeded, failed or cancelled")(
        "older-than", po::value<std::string>(), "finished longer ago than this (\"7d\", \"12h\")")(
        "batch", po::value<int>()->default_value(1000), "rows per statement (1-10000)");
    auto vm = parse_command("tasks purge", rest, d, {}, "--status S --older-than DURATION [--batch N]\n"
                                                        "example: agentcron tasks purge --status succeeded --older-than 3d", help);
    if (help) return ExitCode::ok;
    if (!vm.count("status") || !vm.count("older-than")) throw UsageError("tasks purge: give --status and --older-than");
    std::string status = vm["status"].as<std::string>();
    if (status != "succeeded" && status != "failed" && status != "cancelled")
      throw UsageError("tasks purge: --status must be succeeded, failed or cancelled, got \"" + status + "\"");
    std::string why;
    auto older = parse_duration(vm["older-than"].as<std::string>(), &why);
    if (!older || *older < Millis(0)) throw UsageError("tasks purge: --older-than: " + (why.empty() ? "must be >= 0" : why));
    int batch = vm["batch"].as<int>();
    if (batch < 1 || batch > 10000) throw UsageError("tasks purge: --batch must be from 1 to 10000");
    Config c = load(g);
    auto log = make_logger(c);
    AdminDb db(c, *log);
    std::cout << "purged " << purge_tasks(db.store, status, *older, batch) << " " << status << " task(s)\n";
    return ExitCode::ok;
  }
  throw UsageError("tasks: unknown subcommand \"" + sub + "\" (list, show, cancel, retry, approve, reject, purge)");
}

namespace {

// A command with subcommands: its first argument, the rest, and whether help was asked for
// (printing `usage` then).
struct Subcommand {
  std::string name;
  std::vector<std::string> rest;
  bool help = false;
};
Subcommand subcommand(const Globals& g, const std::string& command, const char* usage, const std::string& choices) {
  if (g.args.empty()) throw UsageError(command + ": give a subcommand: " + choices);
  Subcommand sub{g.args[0], std::vector<std::string>(g.args.begin() + 1, g.args.end())};
  sub.help = sub.name == "--help" || sub.name == "-h" || std::find(sub.rest.begin(), sub.rest.end(), "--help") != sub.rest.end() ||
             std::find(sub.rest.begin(), sub.rest.end(), "-h") != sub.rest.end();
  if (sub.help) std::cout << usage;
  return sub;
}

// `<command> list [--format table|json]`: the rows `fetch` reads, as a table of `columns` or JSON.
ExitCode list_command(const Globals& g, const std::string& name, const std::vector<std::string>& rest,
                      const std::function<JsonRows(PgTaskStore&)>& fetch, const std::vector<std::string>& columns) {
  po::options_description d(name + " options");
  d.add_options()("format", po::value<std::string>()->default_value("table"), "table or json");
  bool help = false;
  auto vm = parse_command(name, rest, d, {}, "[--format table|json]", help);
  if (help) return ExitCode::ok;
  bool json = json_format(vm, name);
  Config c = load(g);
  auto log = make_logger(c);
  AdminDb db(c, *log);
  print_rows(fetch(db.store), json, columns);
  return ExitCode::ok;
}

}  // namespace

ExitCode cmd_kinds(const Globals& g) {
  const char* usage =
      "usage: agentcron kinds pause KIND... | resume KIND... | list [--format table|json]\n"
      "\n"
      "  pause    no worker claims tasks of the kind (running ones finish); stored in the database\n"
      "  resume   workers claim the kind again at once\n"
      "  list     the paused kinds\n"
      "\n"
      "example: agentcron kinds pause report   # e.g. while its downstream service is down\n";
  auto [sub, rest, help] = subcommand(g, "kinds", usage, "pause, resume or list");
  if (help) return ExitCode::ok;
  if (sub == "list") return list_command(g, "kinds list", rest, paused_kinds, {"kind", "paused_at"});
  if (sub != "pause" && sub != "resume") throw UsageError("kinds: unknown subcommand \"" + sub + "\" (pause, resume, list)");
  if (rest.empty()) throw UsageError("kinds " + sub + ": give one or more kinds");
  for (const auto& k : rest)
    if (k.empty() || k.size() > 200 || k.starts_with("-")) throw UsageError("kinds " + sub + ": not a kind: \"" + k + "\"");
  Config c = load(g);
  auto log = make_logger(c);
  AdminDb db(c, *log);
  for (const auto& k : rest) {
    bool changed = sub == "pause" ? pause_kind(db.store, k) : resume_kind(db.store, k);
    std::cout << "kind " << k << ": " << (sub == "pause" ? "paused" : "resumed") << (changed ? "" : " already") << "\n";
  }
  return ExitCode::ok;
}

ExitCode cmd_schedules(const Globals& g) {
  const char* usage =
      "usage: agentcron schedules list [--format table|json] | run-now NAME | pause NAME | resume NAME\n"
      "\n"
      "  list     each [schedules.<name>]: its next fire in UTC and in its zone, its last run\n"
      "  run-now  its pending occurrence runs now (the regular fires go on)\n"
      "  pause    its occurrence is cancelled (a running one is stopped) and none follows until\n"
      "           resume, which starts again from the next fire\n"
      "\n"
      "Schedules are declared in the configuration ([schedules.<name>]) and synced by every worker\n"
      "whose file has a [schedules] table, at start and on SIGHUP; one removed from the file is\n"
      "disabled, not deleted.\n"
      "example: agentcron schedules run-now nightly-report\n";
  auto [sub, rest, help] = subcommand(g, "schedules", usage, "list, run-now, pause or resume");
  if (help) return ExitCode::ok;
  if (sub == "list")
    return list_command(g, "schedules list", rest, list_schedules,
                        {"name", "cron", "timezone", "kind", "enabled", "paused", "next_fire_utc", "next_fire_local",
                         "last_run", "last_outcome"});
  if (sub != "run-now" && sub != "pause" && sub != "resume")
    throw UsageError("schedules: unknown subcommand \"" + sub + "\" (list, run-now, pause, resume)");
  if (rest.size() != 1) throw UsageError("schedules " + sub + ": give one schedule name");
  Config c = load(g);
  auto log = make_logger(c);
  AdminDb db(c, *log);
  try {
    if (sub == "run-now") {
      std::int64_t id = run_schedule_now(db.store, rest[0]);
      std::cout << "schedule " << rest[0] << ": task " << id << " runs now\n";
    } else {
      bool changed = set_schedule_paused(db.store, rest[0], sub == "pause");
      std::cout << "schedule " << rest[0] << ": " << (sub == "pause" ? "paused" : "resumed") << (changed ? "" : " already")
                << "\n";
    }
  } catch (const AdminError& e) {
    std::cerr << "agentcron: schedules " << sub << ": " << e.what() << "\n";
    return ExitCode::task_failed;
  }
  return ExitCode::ok;
}

ExitCode cmd_doctor(const Globals& g) {
  po::options_description d("doctor options");
  d.add_options()("format", po::value<std::string>()->default_value("table"), "table or json");
  bool help = false;
  auto vm = parse_command("doctor", g.args, d, {},
                          "[--format table|json]\n\n"
                          "Checks, each with a verdict (ok, warn, fail) and advice: connections in use against the\n"
                          "server's, the database's and the role's limits (by application, with the agentcron workers\n"
                          "seen); a pooler in front against database.pgbouncer; server timeouts; a read-only server or\n"
                          "replica; clock skew; the tasks table's dead rows and indexes; due kinds no handler here\n"
                          "takes; running tasks past their lease. Exit 1 when a check fails.\n"
                          "example: agentcron --config /etc/agentcron/agentcron.toml doctor",
                          help);
  if (help) return ExitCode::ok;
  bool json = json_format(vm, "doctor");
  Config c = load(g);
  auto log = make_logger(c);
  AdminDb db(c, *log);
  std::vector<Finding> findings = run_doctor(db.store, c, *log);
  std::cout << render_findings(findings, json);
  bool failed = std::any_of(findings.begin(), findings.end(), [](const Finding& f) { return f.verdict == Finding::Verdict::fail; });
  return failed ? ExitCode::task_failed : ExitCode::ok;
}

}  // namespace agentcron::cli_parts
