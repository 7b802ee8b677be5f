// Reaping orphaned descendants (see reaper.hpp).
#include "agentcron/reaper.hpp"

#include <dirent.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "agentcron/service.hpp"

namespace agentcron {
namespace {

struct Registry {
  std::mutex mu;
  std::set<pid_t> owned;
};

Registry& registry() {
  static Registry* r = new Registry;  // never destroyed: a handler may finish during exit
  return *r;
}

// This process's children, from every thread's /proc/self/task/<tid>/children.
std::vector<pid_t> children() {
  std::vector<pid_t> out;
  DIR* tasks = ::opendir("/proc/self/task");
  if (!tasks) return out;
  while (dirent* e = ::readdir(tasks)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream in(std::string("/proc/self/task/") + e->d_name + "/children");
    for (pid_t pid; in >> pid;) out.push_back(pid);
  }
  ::closedir(tasks);
  return out;
}

}  // namespace

void become_subreaper() { ::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); }

std::unique_lock<std::mutex> lock_own_children() { return std::unique_lock(registry().mu); }

void own_child(pid_t pid, const std::unique_lock<std::mutex>&) { registry().owned.insert(pid); }

void forget_child(pid_t pid) {
  std::lock_guard lock(registry().mu);
  registry().owned.erase(pid);
}

void ReaperOptions::validate() const { require_option(interval > Millis(0), "reaper", "interval must be > 0"); }

Reaper::Reaper(ReaperOptions options, Logger& log)
    : options_(validated(std::move(options))),
      periodic_("reaping orphaned processes", options_.interval, [this](std::stop_token) { run_once(); }, log) {}

ReaperResult Reaper::run_once() {
  ReaperResult r;
  // Nothing to do unless some child has exited: a peek that reaps nothing (WNOWAIT) spares an
  // idle worker the walk of every thread's /proc entry each second (most of its idle CPU).
  siginfo_t exited{};
  if (::waitid(P_ALL, 0, &exited, WEXITED | WNOHANG | WNOWAIT) != 0 || exited.si_pid == 0) return r;
  auto held = lock_own_children();
  for (pid_t pid : children()) {
    if (registry().owned.count(pid)) {
      ++r.skipped;
      continue;
    }
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) ++r.reaped;
  }
  return r;
}

}  // namespace agentcron
