// The e2e process runner (see process.hpp).
#include "support/process.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "agentcron/config.hpp"
#include "support/test_db.hpp"

namespace agentcron::testing {
namespace {
std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
}  // namespace

Process::Process(std::vector<std::string> args, std::map<std::string, std::string> env,
                 std::vector<std::string> wrapper) {
  static std::atomic<int> counter{0};
  std::string base = "/tmp/agentcron-e2e-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
  out_path_ = base + ".out";
  err_path_ = base + ".err";
  std::map<std::string, std::string> full = process_environment();
  full.erase("DATABASE_URL");
  full.erase("JOURNAL_STREAM");
  for (auto& [k, v] : env) full[k] = v;
  std::vector<std::string> envs;
  for (auto& [k, v] : full) envs.push_back(k + "=" + v);
  args.insert(args.begin(), AGENTCRON_BINARY);
  args.insert(args.begin(), wrapper.begin(), wrapper.end());
  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    // The child: signals unblocked (gtest threads may have blocked some), output to files.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    int o = ::open(out_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int e = ::open(err_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(o, 1);
    ::dup2(e, 2);
    std::vector<char*> argv, envp;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    for (auto& s : envs) envp.push_back(s.data());
    envp.push_back(nullptr);
    ::execve(argv[0], argv.data(), envp.data());
    ::_exit(127);
  }
}

Process::~Process() {
  if (running()) {
    ::kill(pid_, SIGKILL);
    wait(std::chrono::seconds(10));
  }
  ::unlink(out_path_.c_str());
  ::unlink(err_path_.c_str());
}

void Process::signal(int sig) { ::kill(pid_, sig); }

std::optional<int> Process::wait(std::chrono::milliseconds timeout) {
  if (status_) return status_;
  bool done = eventually(
      [&] {
        int st = 0;
        pid_t r = ::waitpid(pid_, &st, WNOHANG);
        if (r == pid_) status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        return status_.has_value();
      },
      timeout);
  if (!done) return std::nullopt;
  return status_;
}

bool Process::running() {
  if (status_) return false;
  int st = 0;
  pid_t r = ::waitpid(pid_, &st, WNOHANG);
  if (r == pid_) {
    status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return false;
  }
  return true;
}

std::string Process::out() const { return read_file(out_path_); }
std::string Process::err() const { return read_file(err_path_); }

bool Process::wait_for_log(const std::string& text, std::chrono::milliseconds timeout) {
  return eventually([&] { return err().find(text) != std::string::npos; }, timeout);
}

RunResult run_agentcron(std::vector<std::string> args, std::map<std::string, std::string> env,
                        std::chrono::milliseconds timeout) {
  Process p(std::move(args), std::move(env));
  auto code = p.wait(timeout);
  if (!code) {
    p.signal(SIGKILL);
    p.wait(std::chrono::seconds(5));
    return {-1, p.out(), p.err() + "\n(test: killed after timeout)"};
  }
  return {*code, p.out(), p.err()};
}

}  // namespace agentcron::testing
