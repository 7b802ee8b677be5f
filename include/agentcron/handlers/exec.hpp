// ExecHandler: runs a program (an argv array, never a shell) with the task's payload on stdin and
// its fields in the environment, in a process group of its own; exit 0 succeeds, 75 retries,
// anything else fails (retried while attempts last). On timeout or cancellation the group gets
// SIGTERM, then SIGKILL after kill_after; no zombie is left.
#pragma once
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
};

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
