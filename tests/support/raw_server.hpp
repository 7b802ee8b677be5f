// RawServer: a loopback TCP listener for behaviours no well-behaved HTTP server has — one that
// accepts and never answers, or one that closes in the middle of a response.
#pragma once
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "support/loopback.hpp"

namespace agentcron::testing {

class RawServer {
 public:
  enum class Mode { never_answer, close_mid_response };
  explicit RawServer(Mode mode) : mode_(mode) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    port_ = bind_loopback(fd_, 64);
    thread_ = std::thread([this] { loop(); });
  }
  ~RawServer() {
    stop_ = true;
    thread_.join();
    for (int c : held_) ::close(c);
    ::close(fd_);
  }
  int port() const { return port_; }
  int accepted() const { return accepted_; }

 private:
  void loop() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      ++accepted_;
      char buf[4096];
      pollfd r{c, POLLIN, 0};
      if (::poll(&r, 1, 2000) > 0) [[maybe_unused]] auto n = ::read(c, buf, sizeof buf);
      if (mode_ == Mode::close_mid_response) {
        std::string partial = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"partial";
        [[maybe_unused]] auto w = ::write(c, partial.data(), partial.size());
        ::close(c);
      } else {
        held_.push_back(c);  // say nothing, keep it open
      }
    }
  }
  Mode mode_;
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> accepted_{0};
  std::vector<int> held_;
  std::thread thread_;
};

}  // namespace agentcron::testing
