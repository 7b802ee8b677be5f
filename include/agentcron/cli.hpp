// The agentcron command line: global options, the commands of design.md, sysexits exit codes.
#pragma once

namespace agentcron {

// Exit codes (sysexits.h).
enum ExitCode : int {
  kExitOk = 0,
  kExitTaskFailed = 1,   // `once` ran and some task failed
  kExitUsage = 64,
  kExitUnavailable = 69, // database unavailable
  kExitDataError = 65,   // an applied migration changed
  kExitSoftware = 70,
  kExitConfig = 78,
};

// Parses argv, runs the command, returns the process exit code. Never throws.
int run_cli(int argc, char** argv);

}  // namespace agentcron
