// `agentcron probe` (see probe.hpp).
#include "agentcron/probe.hpp"

#include <httplib.h>

#include "agentcron/utf8.hpp"

namespace agentcron {

std::optional<std::string> probe_worker(const std::string& listen, const std::string& path, Millis timeout) {
  auto colon = listen.rfind(':');
  if (colon == std::string::npos || colon + 1 == listen.size()) return "metrics.listen is not host:port: \"" + listen + "\"";
  std::string host = listen.substr(0, colon);
  if (host.size() > 1 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  // A worker listening on every address answers on the loopback.
  if (host.empty() || host == "0.0.0.0") host = "127.0.0.1";
  if (host == "::") host = "::1";
  int port = 0;
  try {
    port = std::stoi(listen.substr(colon + 1));
  } catch (const std::exception&) {
    return "metrics.listen has no port: \"" + listen + "\"";
  }
  httplib::Client client(host, port);
  auto seconds = std::chrono::duration_cast<std::chrono::seconds>(timeout);
  auto micros = std::chrono::duration_cast<std::chrono::microseconds>(timeout - seconds);
  client.set_connection_timeout(seconds.count(), micros.count());
  client.set_read_timeout(seconds.count(), micros.count());
  std::string url = "http://" + listen + path;
  auto res = client.Get(path);
  if (!res) return "no answer from " + url + ": " + httplib::to_string(res.error());
  if (res->status != 200)
    return url + " answered " + std::to_string(res->status) + ": " + one_line_text(res->body.substr(0, 200));
  return std::nullopt;
}

}  // namespace agentcron
