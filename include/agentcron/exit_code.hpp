// The process's exit codes (sysexits.h), as docs/design.md lists them: what `run`, `once` and
// every other command end with.
#pragma once

namespace agentcron {

enum class ExitCode : int {
  ok = 0,
  task_failed = 1,   // `once` ran and some task failed
  unhealthy = 1,     // `probe`: the worker did not answer (what a container HEALTHCHECK reads)
  usage = 64,        // EX_USAGE: a bad command line
  data_error = 65,   // EX_DATAERR: an applied migration changed
  unavailable = 69,  // EX_UNAVAILABLE: the database is unreachable, unmigrated, or lost outcomes
  software = 70,     // EX_SOFTWARE: an internal error
  config = 78,       // EX_CONFIG: a bad configuration
};

constexpr int to_int(ExitCode code) { return static_cast<int>(code); }

}  // namespace agentcron
