// The administrative operations on a database: tasks (list, show, cancel, retry, approve,
// reject, purge), kinds paused fleet-wide, and named schedules (the sync every worker runs at
// start and on SIGHUP, and the `schedules` commands). Each is a statement or two through the
// PgTaskStore; the state changes go through the SQL API functions of migration 0008, which
// applications call too (docs/sql-api.md).
#pragma once
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "agentcron/duration.hpp"

namespace agentcron {

class PgTaskStore;
struct ScheduleConfig;

// An id or name that does not exist, or one in a state the operation does not apply to. The
// message names it and says why ("task 42 is succeeded; only a pending or running task can be
// cancelled").
class AdminError : public std::runtime_error {
 public:
  enum class Problem { not_found, wrong_state, conflict };
  AdminError(Problem p, const std::string& message) : std::runtime_error(message), problem_(p) {}
  Problem problem() const { return problem_; }

 private:
  Problem problem_;
};

// Each row a JSON object (text), in the order the listing gives them.
using JsonRows = std::vector<std::string>;

struct TaskQuery {
  std::optional<std::string> status;
  std::optional<std::string> kind;
  int limit = 50;
};
JsonRows list_tasks(PgTaskStore& store, const TaskQuery& q);
// The task's row, or nullopt when there is no such task.
std::optional<std::string> show_task(PgTaskStore& store, std::int64_t id);
JsonRows task_runs(PgTaskStore& store, std::int64_t id, int limit);

enum class TaskAction { cancel, retry, approve, reject };
// True when the task changed, false when it was so already (cancelled, approved…). Throws
// AdminError for an unknown id or a state the action does not apply to.
bool act_on_task(PgTaskStore& store, TaskAction action, std::int64_t id);

// Deletes finished tasks of `status` (succeeded, failed or cancelled) older than `older_than`, in
// statements of at most `batch` rows, until none is left. Returns how many.
std::int64_t purge_tasks(PgTaskStore& store, const std::string& status, Millis older_than, int batch);

// A paused kind is claimed by no worker until resumed. Each returns false when nothing changed.
bool pause_kind(PgTaskStore& store, const std::string& kind);
bool resume_kind(PgTaskStore& store, const std::string& kind);
JsonRows paused_kinds(PgTaskStore& store);

// What a schedule sync did.
struct ScheduleSync {
  std::vector<std::string> created;   // new in the database
  std::vector<std::string> changed;   // their definition changed
  std::vector<std::string> disabled;  // no longer in the file: disabled (not deleted)
  std::vector<std::string> started;   // given a carrying task
  std::int64_t tasks_updated = 0;     // carrying tasks that took a changed definition
  std::int64_t tasks_cancelled = 0;   // carrying tasks of disabled or paused schedules
};
// Makes agentcron.schedules match `schedules` (the configuration's [schedules.<name>] tables), in
// one transaction under an advisory lock: safe when a whole fleet starts at once.
ScheduleSync sync_schedules(PgTaskStore& store, const std::vector<ScheduleConfig>& schedules);
// Keeps the database's own schedules carried, whatever any file says: recreates the carrying task
// of an active schedule that has none (cancelled, failed), moves a pending one whose schedule
// changed, cancels those of inactive schedules. Never changes agentcron.schedules itself, so
// workers whose files differ do not undo each other between their starts and reloads.
ScheduleSync maintain_schedules(PgTaskStore& store);
JsonRows list_schedules(PgTaskStore& store);
// The schedule's pending occurrence runs now. Returns its task id; AdminError when there is no
// such schedule or it has no pending occurrence (paused, disabled, or running now).
std::int64_t run_schedule_now(PgTaskStore& store, const std::string& name);
// Pauses (its carrying task cancelled) or resumes (a new one at the next fire) a schedule.
// Returns false when it was so already.
bool set_schedule_paused(PgTaskStore& store, const std::string& name, bool paused);

}  // namespace agentcron
