// The agentcron command line: global options, the commands of design.md, sysexits exit codes.
#pragma once
#include <functional>

#include "agentcron/exit_code.hpp"

namespace agentcron {

class HandlerRegistry;

// Parses argv, runs the command, returns the process exit code (an ExitCode). Never throws. A program that
// embeds agentcron passes `register_handlers` to add its own C++ handlers to the configured ones.
int run_cli(int argc, char** argv, const std::function<void(HandlerRegistry&)>& register_handlers = {});

}  // namespace agentcron
