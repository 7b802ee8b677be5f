// TcpProxy: a loopback TCP relay to a server that the test can pause — a network that stops
// delivering without closing anything, as a partition or a stalled switch does. While paused it
// neither accepts nor relays; bytes wait in the kernel until it resumes.
#pragma once
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <list>
#include <string>
#include <thread>
#include <vector>

#include "support/loopback.hpp"

namespace agentcron::testing {

class TcpProxy {
 public:
  explicit TcpProxy(int target_port) : target_port_(target_port) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    port_ = bind_loopback(listen_fd_, 128);
    thread_ = std::thread([this] { loop(); });
  }
  ~TcpProxy() {
    stop_ = true;
    thread_.join();
    for (auto& p : pipes_) close_pipe(p);
    ::close(listen_fd_);
  }
  int port() const { return port_; }
  void pause() { paused_ = true; }
  void resume() { paused_ = false; }

 private:
  struct Pipe {
    int client = -1, server = -1;
    std::string to_server, to_client;
  };
  static void close_pipe(Pipe& p) {
    if (p.client >= 0) ::close(p.client);
    if (p.server >= 0) ::close(p.server);
    p.client = p.server = -1;
  }
  // Moves what `from` has into `buf`, and what `buf` holds into `to`; false when a side closed.
  static bool pump(int from, std::string& buf, int to, short from_events, short to_events) {
    if (from_events & (POLLIN | POLLHUP | POLLERR)) {
      char chunk[16384];
      ssize_t n = ::read(from, chunk, sizeof chunk);
      if (n == 0 || (n < 0 && errno != EAGAIN)) return false;
      if (n > 0) buf.append(chunk, static_cast<std::size_t>(n));
    }
    if (!buf.empty() && (to_events & POLLOUT)) {
      ssize_t n = ::write(to, buf.data(), buf.size());
      if (n < 0 && errno != EAGAIN) return false;
      if (n > 0) buf.erase(0, static_cast<std::size_t>(n));
    }
    return true;
  }
  void loop() {
    while (!stop_) {
      if (paused_) {
        ::poll(nullptr, 0, 10);  // the stalled network: nothing moves
        continue;
      }
      std::vector<pollfd> fds{{listen_fd_, POLLIN, 0}};
      for (auto& p : pipes_) {
        fds.push_back({p.client, static_cast<short>(POLLIN | (p.to_client.empty() ? 0 : POLLOUT)), 0});
        fds.push_back({p.server, static_cast<short>(POLLIN | (p.to_server.empty() ? 0 : POLLOUT)), 0});
      }
      ::poll(fds.data(), fds.size(), 10);
      if (paused_) continue;
      std::size_t i = 1;
      for (auto it = pipes_.begin(); it != pipes_.end(); i += 2) {
        short c = fds[i].revents, s = fds[i + 1].revents;
        bool ok = pump(it->client, it->to_server, it->server, c, s) && pump(it->server, it->to_client, it->client, s, c);
        if (!ok) {
          close_pipe(*it);
          it = pipes_.erase(it);
        } else {
          ++it;
        }
      }
      if (fds[0].revents & POLLIN) {
        int c;
        while ((c = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK)) >= 0) {
          int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
          sockaddr_in t = loopback_address(target_port_);
          if (::connect(s, reinterpret_cast<sockaddr*>(&t), sizeof t) != 0) {
            ::close(s);
            ::close(c);
            continue;
          }
          ::fcntl(s, F_SETFL, ::fcntl(s, F_GETFL) | O_NONBLOCK);
          pipes_.push_back(Pipe{c, s, {}, {}});
        }
      }
    }
  }

  int target_port_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false}, paused_{false};
  std::list<Pipe> pipes_;
  std::thread thread_;
};

}  // namespace agentcron::testing
