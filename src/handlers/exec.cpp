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
#include <map>

#include "agentcron/config.hpp"
#include "agentcron/log.hpp"
#include "agentcron/utf8.hpp"

namespace agentcron {
namespace {

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
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

TaskOutcome ExecHandler::run(const Task& task, const HandlerContext& ctx) {
  const ExecOptions& o = options_;
  SigpipeGuard no_sigpipe;
  std::vector<std::string> env = child_environment(task, process_environment(), o.inherit_env, o.env);
  std::vector<std::string> args = o.command;
  std::vector<char*> argv, envp;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);

  int in_pipe[2], out_pipe[2];
  if (::pipe2(in_pipe, O_CLOEXEC) != 0) return TaskOutcome::retry(std::string("pipe: ") + std::strerror(errno));
  Fd in_r(in_pipe[0]), in_w(in_pipe[1]);
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) return TaskOutcome::retry(std::string("pipe: ") + std::strerror(errno));
  Fd out_r(out_pipe[0]), out_w(out_pipe[1]);
  // An exec failure in the child is reported through this pipe (closed by a successful execve).
  int err_pipe[2];
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) return TaskOutcome::retry(std::string("pipe: ") + std::strerror(errno));
  Fd err_r(err_pipe[0]), err_w(err_pipe[1]);
  const char* dir = o.working_dir.empty() ? nullptr : o.working_dir.c_str();

  pid_t pid = ::fork();
  if (pid < 0) return TaskOutcome::retry(std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    // The child: async-signal-safe calls only.
    ::setpgid(0, 0);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    ::sigaction(SIGPIPE, &dfl, nullptr);
    ::dup2(in_pipe[0], 0);
    ::dup2(out_pipe[1], 1);
    ::dup2(out_pipe[1], 2);
    int report = err_pipe[1];
    if (report != 3) {
      ::dup2(report, 3);
      report = 3;
    }
    ::fcntl(report, F_SETFD, FD_CLOEXEC);
    ::syscall(SYS_close_range, 4u, ~0u, 0u);  // no pooled socket or other descriptor leaks in
    if (dir && ::chdir(dir) != 0) {
      int e = errno;
      [[maybe_unused]] auto n = ::write(report, &e, sizeof e);
      ::_exit(127);
    }
    ::execve(argv[0], argv.data(), envp.data());
    if (errno == ENOENT && std::strchr(argv[0], '/') == nullptr) ::execvpe(argv[0], argv.data(), envp.data());
    int e = errno;
    [[maybe_unused]] auto n = ::write(report, &e, sizeof e);
    ::_exit(127);
  }
  ::setpgid(pid, pid);  // also from the parent: no race with a kill below
  in_r.reset();
  out_w.reset();
  err_w.reset();
  int exec_errno = 0;
  if (::read(err_r.get(), &exec_errno, sizeof exec_errno) == sizeof exec_errno) {
    ::waitpid(pid, nullptr, 0);
    return TaskOutcome::failure("cannot run " + o.command.front() + ": " + std::strerror(exec_errno));
  }
  err_r.reset();

  Fd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  Fd stop_fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  std::stop_callback on_stop(ctx.stop, [&] {
    std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(stop_fd.get(), &one, sizeof one);
  });
  ::fcntl(in_w.get(), F_SETFL, O_NONBLOCK);
  ::fcntl(out_r.get(), F_SETFL, O_NONBLOCK);

  const std::string& payload = task.payload;
  std::size_t written = 0;
  if (payload.empty()) in_w.reset();
  Tail tail(o.output_tail);
  auto start = std::chrono::steady_clock::now();
  auto deadline = std::min(ctx.deadline, start + o.timeout);
  bool exited = false, timed_out = false, stopped = false;
  int status = 0;
  std::chrono::steady_clock::time_point exited_at{};
  enum class Phase { running, term_sent, kill_sent } phase = Phase::running;
  std::chrono::steady_clock::time_point kill_at{};

  auto signal_group = [&](int sig) { ::kill(-pid, sig); };

  while (true) {
    auto now = std::chrono::steady_clock::now();
    if (!exited && phase == Phase::running && (now >= deadline || stopped)) {
      timed_out = !stopped;
      signal_group(SIGTERM);
      phase = Phase::term_sent;
      kill_at = now + o.kill_after;
    }
    if (!exited && phase == Phase::term_sent && now >= kill_at) {
      log_.warn("exec handler ignored SIGTERM; sending SIGKILL", {{"task_id", task.id}, {"kind", task.kind}, {"attempt", task.attempt}});
      signal_group(SIGKILL);
      phase = Phase::kill_sent;
    }
    // Once the child is gone, give a lingering grandchild holding the output a moment, not forever.
    if (exited && (out_r.get() < 0 || now - exited_at > std::chrono::milliseconds(100))) break;

    pollfd fds[4];
    int n = 0;
    int i_out = -1, i_in = -1, i_stop = -1;
    if (out_r.get() >= 0) { i_out = n; fds[n++] = {out_r.get(), POLLIN, 0}; }
    if (in_w.get() >= 0) { i_in = n; fds[n++] = {in_w.get(), POLLOUT, 0}; }
    if (!exited && pidfd.get() >= 0) fds[n++] = {pidfd.get(), POLLIN, 0};  // readable when the child exits
    if (!stopped) { i_stop = n; fds[n++] = {stop_fd.get(), POLLIN, 0}; }
    auto wake = exited ? exited_at + std::chrono::milliseconds(100)
                : phase == Phase::running ? deadline
                : phase == Phase::term_sent ? kill_at
                                            : now + std::chrono::milliseconds(100);
    int timeout_ms = static_cast<int>(std::clamp<std::int64_t>(
        std::chrono::ceil<std::chrono::milliseconds>(wake - now).count(), 0, 1000));
    if (pidfd.get() < 0 && !exited) timeout_ms = std::min(timeout_ms, 20);  // no pidfd: poll waitpid
    ::poll(fds, n, timeout_ms);

    if (i_stop >= 0 && fds[i_stop].revents) stopped = true;
    if (i_in >= 0 && (fds[i_in].revents & (POLLOUT | POLLERR | POLLHUP))) {
      ssize_t w = ::write(in_w.get(), payload.data() + written, payload.size() - written);
      if (w > 0) written += static_cast<std::size_t>(w);
      if (written >= payload.size() || (w < 0 && errno != EAGAIN)) in_w.reset();
    }
    if (i_out >= 0 && (fds[i_out].revents & (POLLIN | POLLHUP | POLLERR))) {
      char buf[8192];
      ssize_t r;
      while ((r = ::read(out_r.get(), buf, sizeof buf)) > 0) tail.append(buf, static_cast<std::size_t>(r));
      if (r == 0) out_r.reset();
    }
    if (!exited && ::waitpid(pid, &status, WNOHANG) == pid) {
      exited = true;
      exited_at = std::chrono::steady_clock::now();
      in_w.reset();
    }
  }
  if (!exited) ::waitpid(pid, &status, 0);  // never leave a zombie
  if (phase != Phase::running) signal_group(SIGKILL);  // whatever of the group is left

  std::string out = tail.str();
  if (timed_out) {
    // The limit that ran out: the task's own (its deadline may even have passed before the
    // program started), or the handler's timeout.
    Millis limit = ctx.deadline < start + o.timeout ? ctx.limit : o.timeout;
    return TaskOutcome::retry(with_tail("timed out after " + format_duration(limit), out));
  }
  if (stopped) return TaskOutcome::released(with_tail("stopped", out));
  if (WIFEXITED(status)) {
    int code = WEXITSTATUS(status);
    if (code == 0) return TaskOutcome::success();
    if (code == 75) return TaskOutcome::retry(with_tail("exit 75 (temporary failure)", out));
    if (code == 65) return TaskOutcome::failure(with_tail("exit 65 (data error: not retried)", out));
    return TaskOutcome::retry(with_tail("exit " + std::to_string(code), out));
  }
  return TaskOutcome::retry(with_tail("killed by signal " + std::to_string(WTERMSIG(status)) + " (" +
                                          strsignal(WTERMSIG(status)) + ")",
                                      out));
}

}  // namespace agentcron
