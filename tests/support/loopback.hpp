// Loopback sockets for the tests' own servers and relays: an address on 127.0.0.1, and a socket
// bound there at a port the kernel picks.
#pragma once
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>

namespace agentcron::testing {

inline sockaddr_in loopback_address(int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  return a;
}

// Binds `fd` to 127.0.0.1 at a free port and, when `backlog` > 0, listens; returns the port.
inline int bind_loopback(int fd, int backlog) {
  sockaddr_in a = loopback_address(0);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  if (backlog > 0) ::listen(fd, backlog);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  return ntohs(a.sin_port);
}

}  // namespace agentcron::testing
