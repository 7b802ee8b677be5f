// The exec handler (see handlers/exec.hpp). fork+execve rather than posix_spawn so the child can
// get its own process group, an empty signal mask and no descriptor beyond 0-2; between fork and
// execve only async-signal-safe calls run.
#include "agentcron/handlers/exec.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/pidfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>
#include <map>
#include <variant>

#include "agentcron/config.hpp"
#include "agentcron/log.hpp"
#include "agentcron/reaper.hpp"
#include "agentcron/utf8.hpp"

namespace agentcron {
namespace {

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd(Fd&& other) noexcept : fd_(other.release()) {}
  Fd& operator=(Fd&& other) noexcept {
    reset(other.release());
    return *this;
  }
  int get() const { return fd_; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_;
};

// The last `cap` bytes written to it, as valid UTF-8 starting on a character boundary.
class Tail {
 public:
  explicit Tail(std::size_t cap) : cap_(cap) {}
  void append(const char* p, std::size_t n) {
    buf_.append(p, n);
    if (buf_.size() > 2 * cap_) buf_.erase(0, buf_.size() - cap_);
  }
  std::string str() const { return std::string(utf8_suffix(valid_utf8(buf_), cap_)); }

 private:
  std::size_t cap_;
  std::string buf_;
};

std::string with_tail(std::string what, const std::string& tail) {
  if (!tail.empty()) what += ": " + tail;
  return what;
}

}  // namespace

// Blocks SIGPIPE in this thread while it lives: writing the payload to a child that already exited
// must be an EPIPE, not the death of the worker (or of a test). A SIGPIPE left pending is consumed.
class SigpipeGuard {
 public:
  SigpipeGuard() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_, &old_);
  }
  ~SigpipeGuard() {
    timespec zero{0, 0};
    while (sigtimedwait(&pipe_, nullptr, &zero) > 0) {
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }

 private:
  sigset_t pipe_, old_;
};

namespace {

// A started child: its pid and our ends of its stdin and stdout+stderr.
struct Child {
  pid_t pid = -1;
  Fd in_w, out_r;
};

// Pipes for a child: [0] is read, [1] written; closed on exec.
bool make_pipe(Fd& r, Fd& w) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return false;
  r.reset(fds[0]);
  w.reset(fds[1]);
  return true;
}

// In the forked child: async-signal-safe calls only. A failure to run the program is reported
// as its errno through `report` (closed by a successful execve).
[[noreturn]] void exec_child(int in_fd, int out_fd, int report, const char* dir, char** argv, char** envp) {
  ::setpgid(0, 0);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  ::sigaction(SIGPIPE, &dfl, nullptr);
  ::dup2(in_fd, 0);
  ::dup2(out_fd, 1);
  ::dup2(out_fd, 2);
  if (report != 3) {
    ::dup2(report, 3);
    report = 3;
  }
  ::fcntl(report, F_SETFD, FD_CLOEXEC);
  ::syscall(SYS_close_range, 4u, ~0u, 0u);  // no pooled socket or other descriptor leaks in
  if (!dir || ::chdir(dir) == 0) {
    ::execve(argv[0], argv, envp);
    if (errno == ENOENT && std::strchr(argv[0], '/') == nullptr) ::execvpe(argv[0], argv, envp);
  }
  int e = errno;
  [[maybe_unused]] auto n = ::write(report, &e, sizeof e);
  ::_exit(127);
}

// Starts `command` in a process group of its own with `env`; or the outcome of failing to.
std::variant<Child, TaskOutcome> spawn(const ExecOptions& o, std::vector<std::string> env) {
  std::vector<std::string> args = o.command;
  std::vector<char*> argv, envp;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  Fd in_r, in_w, out_r, out_w, err_r, err_w;
  if (!make_pipe(in_r, in_w) || !make_pipe(out_r, out_w) || !make_pipe(err_r, err_w))
    return TaskOutcome::retry(std::string("pipe: ") + std::strerror(errno));
  pid_t pid;
  {
    // Registered before the reaper can see it: its exit status is ours to wait for.
    auto held = lock_own_children();
    pid = ::fork();
    if (pid > 0) own_child(pid, held);
  }
  if (pid < 0) return TaskOutcome::retry(std::string("fork: ") + std::strerror(errno));
  if (pid == 0)
    exec_child(in_r.get(), out_w.get(), err_w.get(), o.working_dir.empty() ? nullptr : o.working_dir.c_str(),
               argv.data(), envp.data());
  ::setpgid(pid, pid);  // also from the parent: no race with a kill below
  in_r.reset();
  out_w.reset();
  err_w.reset();
  int exec_errno = 0;
  if (::read(err_r.get(), &exec_errno, sizeof exec_errno) == sizeof exec_errno) {
    ::waitpid(pid, nullptr, 0);
    forget_child(pid);
    return TaskOutcome::failure("cannot run " + o.command.front() + ": " + std::strerror(exec_errno));
  }
  Child c;
  c.pid = pid;
  c.in_w = std::move(in_w);
  c.out_r = std::move(out_r);
  return c;
}

// One run of a child to its end: feeds it the payload, keeps the tail of its output, and on a
// timeout or a stop request sends its group SIGTERM, then SIGKILL after kill_after.
class Supervision {
 public:
  Supervision(Child& child, const std::string& payload, std::size_t tail, std::chrono::steady_clock::time_point deadline,
              Millis kill_after, const std::stop_token& stop)
      : child_(child), payload_(payload), tail_(tail), deadline_(deadline), kill_after_(kill_after),
        pidfd_(static_cast<int>(::syscall(SYS_pidfd_open, child.pid, 0))),
        stop_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)),
        on_stop_(stop, [this] {
          std::uint64_t one = 1;
          [[maybe_unused]] auto n = ::write(stop_fd_.get(), &one, sizeof one);
        }) {
    ::fcntl(child_.in_w.get(), F_SETFL, O_NONBLOCK);
    ::fcntl(child_.out_r.get(), F_SETFL, O_NONBLOCK);
    if (payload_.empty()) child_.in_w.reset();
  }

  // Runs until the child is gone (and its output drained, within a moment). `on_kill` is told
  // when SIGTERM was ignored.
  template <class OnKill>
  void run(OnKill&& on_kill) {
    while (true) {
      auto now = std::chrono::steady_clock::now();
      escalate(now, on_kill);
      // Once the child is gone, give a lingering grandchild holding the output a moment, not forever.
      if (exited_ && (child_.out_r.get() < 0 || now - exited_at_ > kLinger)) break;
      wait_and_handle(now);
    }
    if (!exited_) ::waitpid(child_.pid, &status_, 0);  // never leave a zombie
    forget_child(child_.pid);
    if (phase_ != Phase::running) ::kill(-child_.pid, SIGKILL);  // whatever of the group is left
  }

  bool timed_out() const { return timed_out_; }
  bool stopped() const { return stopped_; }
  int status() const { return status_; }
  std::string output() const { return tail_.str(); }

 private:
  enum class Phase { running, term_sent, kill_sent };
  static constexpr std::chrono::milliseconds kLinger{100};

  template <class OnKill>
  void escalate(std::chrono::steady_clock::time_point now, OnKill&& on_kill) {
    if (exited_) return;
    if (phase_ == Phase::running && (now >= deadline_ || stopped_)) {
      // Its own deadline, also when the executor's stop for that same deadline woke it first:
      // a time-out keeps the program's output tail.
      timed_out_ = now >= deadline_;
      ::kill(-child_.pid, SIGTERM);
      phase_ = Phase::term_sent;
      kill_at_ = now + kill_after_;
    }
    if (phase_ == Phase::term_sent && now >= kill_at_) {
      on_kill();
      ::kill(-child_.pid, SIGKILL);
      phase_ = Phase::kill_sent;
    }
  }

  void wait_and_handle(std::chrono::steady_clock::time_point now) {
    pollfd fds[4];
    int n = 0, i_out = -1, i_in = -1, i_stop = -1;
    if (child_.out_r.get() >= 0) { i_out = n; fds[n++] = {child_.out_r.get(), POLLIN, 0}; }
    if (child_.in_w.get() >= 0) { i_in = n; fds[n++] = {child_.in_w.get(), POLLOUT, 0}; }
    if (!exited_ && pidfd_.get() >= 0) fds[n++] = {pidfd_.get(), POLLIN, 0};  // readable when the child exits
    if (!stopped_) { i_stop = n; fds[n++] = {stop_fd_.get(), POLLIN, 0}; }
    auto wake = exited_ ? exited_at_ + kLinger
                : phase_ == Phase::running ? deadline_
                : phase_ == Phase::term_sent ? kill_at_
                                             : now + kLinger;
    int timeout_ms = static_cast<int>(std::clamp<std::int64_t>(
        std::chrono::ceil<std::chrono::milliseconds>(wake - now).count(), 0, 1000));
    if (pidfd_.get() < 0 && !exited_) timeout_ms = std::min(timeout_ms, 20);  // no pidfd: poll waitpid
    ::poll(fds, static_cast<nfds_t>(n), timeout_ms);
    if (i_stop >= 0 && fds[i_stop].revents) stopped_ = true;
    if (i_in >= 0 && (fds[i_in].revents & (POLLOUT | POLLERR | POLLHUP))) feed();
    if (i_out >= 0 && (fds[i_out].revents & (POLLIN | POLLHUP | POLLERR))) drain();
    if (!exited_ && ::waitpid(child_.pid, &status_, WNOHANG) == child_.pid) {
      exited_ = true;
      exited_at_ = std::chrono::steady_clock::now();
      child_.in_w.reset();
    }
  }

  void feed() {
    ssize_t w = ::write(child_.in_w.get(), payload_.data() + written_, payload_.size() - written_);
    if (w > 0) written_ += static_cast<std::size_t>(w);
    if (written_ >= payload_.size() || (w < 0 && errno != EAGAIN)) child_.in_w.reset();
  }

  void drain() {
    char buf[8192];
    ssize_t r;
    while ((r = ::read(child_.out_r.get(), buf, sizeof buf)) > 0) tail_.append(buf, static_cast<std::size_t>(r));
    if (r == 0) child_.out_r.reset();
  }

  Child& child_;
  const std::string& payload_;
  Tail tail_;
  std::chrono::steady_clock::time_point deadline_;
  Millis kill_after_;
  Fd pidfd_, stop_fd_;
  std::stop_callback<std::function<void()>> on_stop_;
  std::size_t written_ = 0;
  bool exited_ = false, timed_out_ = false, stopped_ = false;
  int status_ = 0;
  std::chrono::steady_clock::time_point exited_at_{}, kill_at_{};
  Phase phase_ = Phase::running;
};

// What an ended run means (design.md's exit codes): 0 succeeds, 75 retries, 65 fails for good,
// anything else — or a signal — fails this attempt.
TaskOutcome outcome_of(int status, const std::string& out) {
  if (WIFEXITED(status)) {
    int code = WEXITSTATUS(status);
    if (code == 0) return TaskOutcome::success();
    if (code == 75) return TaskOutcome::retry(with_tail("exit 75 (temporary failure)", out));
    if (code == 65) return TaskOutcome::failure(with_tail("exit 65 (data error: not retried)", out));
    return TaskOutcome::retry(with_tail("exit " + std::to_string(code), out));
  }
  int sig = WTERMSIG(status);
  return TaskOutcome::retry(with_tail("killed by signal " + std::to_string(sig) + " (" + strsignal(sig) + ")", out));
}

}  // namespace

TaskOutcome ExecHandler::run(const Task& task, const HandlerContext& ctx) {
  const ExecOptions& o = options_;
  SigpipeGuard no_sigpipe;
  auto spawned = spawn(o, child_environment(task, process_environment(), o.inherit_env, o.env));
  if (auto* failed = std::get_if<TaskOutcome>(&spawned)) return *failed;
  Child& child = std::get<Child>(spawned);
  auto start = std::chrono::steady_clock::now();
  Supervision run(child, task.payload, o.output_tail, std::min(ctx.deadline, start + o.timeout), o.kill_after, ctx.stop);
  run.run([&] {
    log_.warn("exec handler ignored SIGTERM; sending SIGKILL", {{"task_id", task.id}, {"kind", task.kind}, {"attempt", task.attempt}});
  });
  if (run.timed_out()) {
    // The limit that ran out: the task's own (its deadline may even have passed before the
    // program started), or the handler's timeout.
    Millis limit = ctx.deadline < start + o.timeout ? ctx.limit : o.timeout;
    return TaskOutcome::retry(with_tail("timed out after " + format_duration(limit), run.output()));
  }
  if (run.stopped()) return TaskOutcome::released(with_tail("stopped", run.output()));
  return outcome_of(run.status(), run.output());
}

}  // namespace agentcron
