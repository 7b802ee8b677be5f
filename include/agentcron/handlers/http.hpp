// HttpHandler: POSTs {task_id, agent_id, kind, attempt, payload} as JSON to the agent service,
// with an Idempotency-Key naming one attempt of one occurrence. 2xx succeeds (a JSON body is kept,
// truncated); timeouts, connection errors, 408, 429 and 5xx retry, honouring Retry-After; other
// statuses fail permanently with the status and the start of the body. A reply is read up to
// max_response_bytes (decompressed bytes counted): a longer one fails its task unread.
#pragma once
#include <chrono>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "agentcron/duration.hpp"
#include "agentcron/handlers/handler.hpp"

namespace agentcron {

struct HttpOptions {
  std::string url;                  // http(s)://host[:port]/path
  std::string method = "POST";      // POST, PUT or PATCH
  std::vector<std::pair<std::string, std::string>> headers;  // already expanded
  Millis timeout = std::chrono::seconds(30);
  bool tls_verify = true;
  std::size_t keep_body = 2048;     // bytes of a response body kept
  std::string ca_file = {};         // PEM certificates to verify the server with ("" = the system's)
  std::size_t max_response_bytes = 1 << 20;  // a longer reply (decompressed) stops the reading
};

// Retry-After as seconds ("120") or an HTTP date ("Wed, 21 Oct 2015 07:28:00 GMT"), relative to
// `now`; nullopt when it is neither.
std::optional<SysTime> parse_retry_after(const std::string& value, SysTime now);

// Expands ${VAR} from the environment in a header value; throws std::runtime_error naming the
// variable (never its value) when it is unset.
std::string expand_env(const std::string& value);

class HttpHandler final : public Handler {
 public:
  explicit HttpHandler(HttpOptions options);
  TaskOutcome run(const Task& task, const HandlerContext& ctx) override;
  // The request body for a task (exposed for tests and docs).
  static std::string request_body(const Task& task);
  // agentcron-<id>-<attempt>, and for a recurring task agentcron-<id>-<occurrence>-<attempt>
  // (occurrence as 20261125T023000Z): one key per attempt of one occurrence.
  static std::string idempotency_key(const Task& task);

 private:
  HttpOptions options_;
  std::string base_;  // scheme://host:port
  std::string path_;  // /path?query
  std::string shown_url_;  // the url as messages show it: no userinfo, no query
};

}  // namespace agentcron
