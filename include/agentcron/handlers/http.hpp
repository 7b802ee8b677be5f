// HttpHandler: POSTs {task_id, agent_id, kind, attempt, payload} as JSON to the agent service,
// with an Idempotency-Key of agentcron-<task id>-<attempt>. 2xx succeeds (a JSON body is kept,
// truncated); timeouts, connection errors, 408, 429 and 5xx retry, honouring Retry-After; other
// statuses fail permanently with the status and the start of the body.
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

 private:
  HttpOptions options_;
  std::string base_;  // scheme://host:port
  std::string path_;  // /path?query
};

}  // namespace agentcron
