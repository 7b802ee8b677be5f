// Deleting finished tasks past their retention (see janitor.hpp).
#include "agentcron/janitor.hpp"

#include "agentcron/log.hpp"
#include "agentcron/service.hpp"
#include "agentcron/task_store.hpp"

namespace agentcron {

void JanitorOptions::validate() const {
  require_option(succeeded > Millis(0) && failed > Millis(0), "janitor", "retentions must be > 0");
  require_option(batch > 0 && max_batches > 0, "janitor", "batch and max_batches must be > 0");
  require_option(interval > Millis(0), "janitor", "interval must be > 0");
}

Janitor::Janitor(JanitorOptions options, TaskStore& store, Logger& log)
    : options_(validated(std::move(options))),
      store_(store),
      log_(log),
      periodic_("deleting old tasks", options_.interval, [this](std::stop_token st) { run_once(st); }, log) {}

JanitorResult Janitor::run_once(std::stop_token stop) {
  JanitorResult r;
  while (r.batches < options_.max_batches && !stop.stop_requested()) {
    FinishedDeleted n = store_.delete_finished(options_.succeeded, options_.failed, options_.batch);
    ++r.batches;
    r.deleted += n.tasks;
    r.runs_deleted += n.runs;
    // Either may have more: a recurring task never finishes, so its old runs go without a task.
    if (n.tasks < options_.batch && n.runs < options_.batch) break;
  }
  if (r.deleted > 0 || r.runs_deleted > 0)
    log_.info("deleted finished tasks and runs past their retention", {{"tasks", r.deleted}, {"runs", r.runs_deleted}});
  return r;
}

}  // namespace agentcron
