// ExecHandler: runs a program (an argv array, never a shell) with the task's payload on stdin and
// its fields in a clean environment (see child_environment), in a process group of its own; exit 0 succeeds, 75 retries,
// anything else fails (retried while attempts last). On timeout or cancellation the group gets
// SIGTERM, then SIGKILL after kill_after; no zombie is left.
#pragma once
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "agentcron/duration.hpp"
#include "agentcron/handlers/handler.hpp"

namespace agentcron {

struct ExecOptions {
  std::vector<std::string> command;
  std::string working_dir;
  std::vector<std::pair<std::string, std::string>> env;
  Millis timeout = std::chrono::seconds(30);
  Millis kill_after = std::chrono::seconds(5);
  std::size_t output_tail = 4096;  // bytes of stdout+stderr kept for the run's record
  // Names (or prefixes ending in '*') of worker variables passed on beyond the allow-list.
  std::vector<std::string> inherit_env = {};
};

// The environment a child gets: PATH, LANG, LC_*, TZ and HOME of `parent`, the variables named by
// `inherit` (exact names, or prefixes ending in '*'), then `env`, then AGENTCRON_TASK_ID, _KIND,
// _ATTEMPT and _AGENT_ID. Nothing else of the worker's environment (DATABASE_URL, tokens from an
// EnvironmentFile, PG* variables) reaches a child.
std::vector<std::string> child_environment(const Task& task, const std::map<std::string, std::string>& parent,
                                           const std::vector<std::string>& inherit,
                                           const std::vector<std::pair<std::string, std::string>>& env);

// Whether a name (or a prefix ending in '*') could match DATABASE_URL, PGPASSWORD or another
// variable holding the database's credentials, which no child and no http header may get.
// Returns the reason when it could.
std::optional<std::string> names_database_credentials(const std::string& name);

// Whether `name` may be named in inherit_env: not the database's credentials, and none of the
// worker's own AGENTCRON_* settings. Returns the reason when it may not.
std::optional<std::string> forbidden_inherit(const std::string& name);

class ExecHandler final : public Handler {
 public:
  ExecHandler(ExecOptions options, Logger& log) : options_(std::move(options)), log_(log) {}
  TaskOutcome run(const Task& task, const HandlerContext& ctx) override;
  const ExecOptions& options() const { return options_; }

 private:
  ExecOptions options_;
  Logger& log_;
};

}  // namespace agentcron
