// The administrative operations (see admin.hpp).
#include "agentcron/admin.hpp"

#include "admin_statements.hpp"
#include "pg_execution.hpp"
#include "agentcron/config.hpp"
#include "agentcron/cron.hpp"
#include "agentcron/pg_task_store.hpp"
#include "agentcron/retry.hpp"

namespace agentcron {

using pg::Statement;
namespace sql = pg::admin;

namespace {

using Params = std::vector<std::optional<std::string>>;

JsonRows json_rows(const TextRows& r) {
  JsonRows out;
  out.reserve(r.rows.size());
  for (const auto& row : r.rows) out.push_back(row.at(0).value_or("null"));
  return out;
}

std::int64_t first_int(const TextRows& r) {
  if (r.rows.empty() || !r.rows[0].at(0)) return 0;
  return std::stoll(*r.rows[0][0]);
}

// The server's own words from a DatabaseError ("… ERROR:  task 42 is succeeded; …").
std::string server_message(const DatabaseError& e) {
  std::string m = e.what();
  auto at = m.find("ERROR:");
  if (at == std::string::npos) return m;
  m = m.substr(at + 6);
  while (!m.empty() && m.front() == ' ') m.erase(m.begin());
  // The PL/pgSQL context that follows ("CONTEXT:  PL/pgSQL function …") is ours, not the user's.
  if (auto context = m.find(" CONTEXT:"); context != std::string::npos) m.erase(context);
  return m;
}

// The SQL API's refusals as AdminErrors; anything else is the database's failure.
[[noreturn]] void rethrow_refusal(const DatabaseError& e) {
  const std::string& s = e.sqlstate();
  if (s == "P0002") throw AdminError(AdminError::Problem::not_found, server_message(e));
  if (s == "55000" || s == "22023") throw AdminError(AdminError::Problem::wrong_state, server_message(e));
  if (s == "23505") throw AdminError(AdminError::Problem::conflict, server_message(e));
  throw e;
}

// An array literal of text values ({"a","b"}), as the store writes its own (pg::array_literal).
std::string text_array(const std::vector<std::string>& items) {
  return pg::array_literal(items, [](const std::string& v) { return std::optional<std::string>(v); });
}

std::vector<std::string> names_of(const TextRows& r) {
  std::vector<std::string> out;
  for (const auto& row : r.rows) out.push_back(row.at(0).value_or(""));
  return out;
}

// The first fire after the database's `now` of each schedule, as name and epoch-seconds arrays.
std::pair<std::string, std::string> first_fires(const std::vector<std::pair<std::string, std::string>>& name_cron_tz,
                                                const std::vector<std::string>& zones, SysTime now) {
  std::vector<std::string> names, fires;
  for (std::size_t i = 0; i < name_cron_tz.size(); ++i) {
    names.push_back(name_cron_tz[i].first);
    fires.push_back(pg::iso(CronSchedule::parse(name_cron_tz[i].second).next(now, TimeZone::locate(zones[i]))));
  }
  return {text_array(names), text_array(fires)};
}

}  // namespace

JsonRows list_tasks(PgTaskStore& store, const TaskQuery& q) {
  return json_rows(store.query("list tasks", sql::kListTasks, {q.status, q.kind, std::to_string(q.limit)}));
}

std::optional<std::string> show_task(PgTaskStore& store, std::int64_t id) {
  JsonRows rows = json_rows(store.query("show task", sql::kShowTask, {std::to_string(id)}));
  if (rows.empty()) return std::nullopt;
  return rows.front();
}

JsonRows task_runs(PgTaskStore& store, std::int64_t id, int limit) {
  return json_rows(store.query("list task runs", sql::kTaskRuns, {std::to_string(id), std::to_string(limit)}));
}

bool act_on_task(PgTaskStore& store, TaskAction action, std::int64_t id) {
  try {
    TextRows r;
    std::string task = std::to_string(id);
    switch (action) {
      case TaskAction::cancel: r = store.query("cancel task", sql::kCancelTask, {task, "cancelled by agentcron tasks cancel"}); break;
      case TaskAction::retry: r = store.query("retry task", sql::kRetryTask, {task}); break;
      case TaskAction::approve: r = store.query("approve task", sql::kDecideTask, {task, "approved"}); break;
      case TaskAction::reject: r = store.query("reject task", sql::kDecideTask, {task, "rejected"}); break;
    }
    return !r.rows.empty() && r.rows[0].at(0) == std::optional<std::string>("t");
  } catch (const DatabaseError& e) {
    rethrow_refusal(e);
  }
}

std::int64_t purge_tasks(PgTaskStore& store, const std::string& status, Millis older_than, int batch) {
  std::int64_t total = 0;
  while (true) {
    std::int64_t n = first_int(store.query("purge tasks", sql::kPurgeBatch,
                                           {status, std::to_string(older_than.count()), std::to_string(batch)}));
    total += n;
    if (n < batch) return total;
  }
}

bool pause_kind(PgTaskStore& store, const std::string& kind) {
  return !store.query("pause kind", sql::kPauseKind, {kind}).rows.empty();
}

bool resume_kind(PgTaskStore& store, const std::string& kind) {
  return !store.query("resume kind", sql::kResumeKind, {kind}).rows.empty();
}

JsonRows paused_kinds(PgTaskStore& store) { return json_rows(store.query("list paused kinds", sql::kListPausedKinds, {})); }

ScheduleSync sync_schedules(PgTaskStore& store, const std::vector<ScheduleConfig>& schedules) {
  SysTime now = store.now();
  std::vector<std::string> names, crons, zones, kinds, payloads, priorities, attempts, enabled;
  std::vector<std::pair<std::string, std::string>> name_cron;
  for (const auto& s : schedules) {
    names.push_back(s.name);
    crons.push_back(s.cron);
    zones.push_back(s.timezone);
    kinds.push_back(s.kind);
    payloads.push_back(s.payload);
    priorities.push_back(std::to_string(s.priority));
    attempts.push_back(std::to_string(s.max_attempts));
    enabled.push_back(s.enabled ? "t" : "f");
    name_cron.emplace_back(s.name, s.cron);
  }
  auto [fire_names, fires] = first_fires(name_cron, zones, now);
  ScheduleSync out;
  store.locked_transaction("sync schedules", sql::kScheduleLockKey, [&](const PgTaskStore::StepRunner& step) {
    out = ScheduleSync{};  // a transaction sent again starts afresh
    TextRows up = step(sql::kUpsertSchedules, {text_array(names), text_array(crons), text_array(zones), text_array(kinds),
                                               text_array(payloads), text_array(priorities), text_array(attempts),
                                               text_array(enabled)});
    for (const auto& row : up.rows) (row.at(1) == std::optional<std::string>("t") ? out.created : out.changed).push_back(*row[0]);
    out.disabled = names_of(step(sql::kDisableMissingSchedules, {text_array(names)}));
    out.tasks_cancelled = first_int(step(sql::kCancelInactiveSchedules, {}));
    out.tasks_updated = first_int(step(sql::kUpdateScheduleTasks, {fire_names, fires}));
    out.started = names_of(step(sql::kCreateScheduleTasks, {fire_names, fires}));
  });
  return out;
}

ScheduleSync maintain_schedules(PgTaskStore& store) {
  TextRows active = store.query("list active schedules", sql::kActiveSchedules, {});
  std::vector<std::pair<std::string, std::string>> name_cron;
  std::vector<std::string> zones;
  for (const auto& row : active.rows) {
    // A schedule written by a newer version, or by hand, that this one cannot parse is skipped.
    try {
      CronSchedule::parse(row.at(1).value_or(""));
      TimeZone::locate(row.at(2).value_or("UTC"));
    } catch (const std::exception&) {
      continue;
    }
    name_cron.emplace_back(row.at(0).value_or(""), row.at(1).value_or(""));
    zones.push_back(row.at(2).value_or("UTC"));
  }
  auto [fire_names, fires] = first_fires(name_cron, zones, store.now());
  ScheduleSync out;
  store.locked_transaction("maintain schedules", sql::kScheduleLockKey, [&](const PgTaskStore::StepRunner& step) {
    out = ScheduleSync{};
    out.tasks_cancelled = first_int(step(sql::kCancelInactiveSchedules, {}));
    out.tasks_updated = first_int(step(sql::kUpdateScheduleTasks, {fire_names, fires}));
    out.started = names_of(step(sql::kCreateScheduleTasks, {fire_names, fires}));
  });
  return out;
}

JsonRows list_schedules(PgTaskStore& store) { return json_rows(store.query("list schedules", sql::kListSchedules, {})); }

std::int64_t run_schedule_now(PgTaskStore& store, const std::string& name) {
  TextRows def = store.query("read schedule", sql::kScheduleDefinition, {name});
  if (def.rows.empty()) throw AdminError(AdminError::Problem::not_found, "no schedule \"" + name + "\"");
  TextRows moved = store.query("run schedule now", sql::kRunScheduleNow, {name});
  if (moved.rows.empty())
    throw AdminError(AdminError::Problem::wrong_state,
                     "schedule \"" + name + "\" has no pending occurrence (it is paused, disabled, or running now)");
  return std::stoll(moved.rows[0].at(0).value_or("0"));
}

bool set_schedule_paused(PgTaskStore& store, const std::string& name, bool paused) {
  TextRows def = store.query("read schedule", sql::kScheduleDefinition, {name});
  if (def.rows.empty()) throw AdminError(AdminError::Problem::not_found, "no schedule \"" + name + "\"");
  // columns: name, cron, timezone, enabled, paused
  if ((def.rows[0].at(4) == std::optional<std::string>("t")) == paused) return false;
  std::string cron = def.rows[0].at(1).value_or(""), zone = def.rows[0].at(2).value_or("UTC");
  auto [fire_names, fires] = first_fires({{name, cron}}, {zone}, store.now());
  store.locked_transaction("pause schedule", sql::kScheduleLockKey, [&](const PgTaskStore::StepRunner& step) {
    step(sql::kSetSchedulePaused, {name, paused ? "t" : "f"});
    step(sql::kCancelInactiveSchedules, {});
    step(sql::kCreateScheduleTasks, {fire_names, fires});
  });
  return true;
}

}  // namespace agentcron
