// The signal watcher (see signals.hpp).
#include "agentcron/signals.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cstdint>

namespace agentcron {
namespace {
sigset_t watched() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  return set;
}
}  // namespace

void block_signals() {
  sigset_t set = watched();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  // A handler writing to a closed pipe (an exec child gone) must not kill the worker.
  signal(SIGPIPE, SIG_IGN);
}

SignalWatcher::SignalWatcher(std::function<void(int)> on_terminate, std::function<void()> on_reload)
    : on_terminate_(std::move(on_terminate)), on_reload_(std::move(on_reload)) {
  sigset_t set = watched();
  signal_fd_ = ::signalfd(-1, &set, SFD_CLOEXEC);
  stop_fd_ = ::eventfd(0, EFD_CLOEXEC);
}

SignalWatcher::~SignalWatcher() {
  stop();
  if (signal_fd_ >= 0) ::close(signal_fd_);
  if (stop_fd_ >= 0) ::close(stop_fd_);
}

void SignalWatcher::start() {
  thread_ = std::jthread([this](std::stop_token st) {
    while (!st.stop_requested()) {
      pollfd fds[2] = {{signal_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
      if (::poll(fds, 2, -1) < 0) continue;
      if (fds[1].revents) return;
      signalfd_siginfo info;
      if (::read(signal_fd_, &info, sizeof info) != sizeof info) continue;
      if (info.ssi_signo == SIGHUP) {
        if (on_reload_) on_reload_();
      } else {
        int n = ++terminations_;
        if (on_terminate_) on_terminate_(n);
      }
    }
  });
}

void SignalWatcher::stop() {
  if (!thread_.joinable()) return;
  thread_.request_stop();
  std::uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(stop_fd_, &one, sizeof one);
  thread_.join();
}

}  // namespace agentcron
