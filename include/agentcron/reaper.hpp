// Reaper: waits for orphaned descendants. An exec handler's program may leave children behind (a
// script that backgrounds a command and exits). They are reparented to this process — as PID 1
// in a container, or anywhere once become_subreaper() made it a child subreaper — and without a
// wait they would stay zombies for as long as the worker runs. The exec handler's own children
// are its to wait for: it registers them (own_child) while holding the registry's lock across
// fork(), so the reaper never takes an exit status the handler is waiting for.
#pragma once
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <mutex>

#include "agentcron/duration.hpp"
#include "agentcron/periodic.hpp"

namespace agentcron {

class Logger;

// Makes this process the reaper of its orphaned descendants (PR_SET_CHILD_SUBREAPER).
void become_subreaper();
// The registry of children a handler waits for itself. Hold the lock across fork() and
// own_child(); forget_child() once the handler's waitpid() has returned.
std::unique_lock<std::mutex> lock_own_children();
void own_child(pid_t pid, const std::unique_lock<std::mutex>& held);
void forget_child(pid_t pid);

struct ReaperOptions {
  Millis interval = std::chrono::seconds(1);
  void validate() const;
};

struct ReaperResult {
  int reaped = 0;   // orphans waited for this round
  int skipped = 0;  // children a handler waits for itself (counted in rounds that walk them:
                    // only once some child has exited)
};

class Reaper {
 public:
  Reaper(ReaperOptions options, Logger& log);
  ReaperResult run_once();
  void start() { periodic_.start(); }
  void request_stop() { periodic_.request_stop(); }
  void wait() { periodic_.wait(); }

 private:
  ReaperOptions options_;
  Periodic periodic_;  // last: joined before the members its rounds use go away
};

}  // namespace agentcron
