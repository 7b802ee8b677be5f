// Process: runs the built agentcron binary for end-to-end tests, with its output captured,
// real signals, and waits bounded by deadlines.
#pragma once
#include <sys/types.h>

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace agentcron::testing {

class Process {
 public:
  // Starts AGENTCRON_BINARY with `args`; `env` is added to (or replaces in) the environment.
  // `wrapper` (an absolute program and its arguments) runs the binary, e.g. unshare.
  Process(std::vector<std::string> args, std::map<std::string, std::string> env = {},
          std::vector<std::string> wrapper = {});
  ~Process();  // SIGKILLs a process still running
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  void signal(int sig);
  // The exit code (128+N for death by signal N), or nullopt when still running at the timeout.
  std::optional<int> wait(std::chrono::milliseconds timeout);
  bool running();
  std::string out() const;  // stdout so far
  std::string err() const;  // stderr so far
  // Waits until stderr contains `text`.
  bool wait_for_log(const std::string& text, std::chrono::milliseconds timeout);

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
  std::string out_path_, err_path_;
};

// Runs to completion (at most `timeout`) and returns {exit code, stdout, stderr}.
struct RunResult {
  int code;
  std::string out;
  std::string err;
};
RunResult run_agentcron(std::vector<std::string> args, std::map<std::string, std::string> env = {},
                        std::chrono::milliseconds timeout = std::chrono::seconds(60));

}  // namespace agentcron::testing
