// The agentcron command line: global options, the commands of design.md, sysexits exit codes.
#pragma once
#include <functional>

namespace agentcron {

class HandlerRegistry;

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

// Parses argv, runs the command, returns the process exit code. Never throws. A program that
// embeds agentcron passes `register_handlers` to add its own C++ handlers to the configured ones.
int run_cli(int argc, char** argv, const std::function<void(HandlerRegistry&)>& register_handlers = {});

}  // namespace agentcron
