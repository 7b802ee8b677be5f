// The http handler over cpp-httplib (see handlers/http.hpp). A stop request (timeout or shutdown)
// aborts the request in flight: Client::stop() closes its socket from the stop callback.
#include "agentcron/handlers/http.hpp"

#include <httplib.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <iomanip>
#include <mutex>
#include <sstream>
#include <stdexcept>

#include "agentcron/database_url.hpp"
#include "agentcron/handlers/exec.hpp"
#include "agentcron/log.hpp"
#include "agentcron/utf8.hpp"

namespace agentcron {
namespace {

// A reply body for the task's record: valid UTF-8, at most `n` bytes cut on a character boundary.
std::string truncate(const std::string& s, std::size_t n) { return bounded_utf8(s, n); }

const char* describe(httplib::Error e) {
  switch (e) {
    case httplib::Error::Connection: return "connection failed";
    case httplib::Error::Read: return "connection closed while reading the response";
    case httplib::Error::Write: return "connection closed while sending the request";
    case httplib::Error::ConnectionTimeout: return "connect timed out";
    case httplib::Error::Canceled: return "request cancelled";
    case httplib::Error::SSLConnection: return "TLS connection failed";
    case httplib::Error::SSLServerVerification: return "TLS certificate verification failed";
    case httplib::Error::SSLLoadingCerts: return "the CA certificates (ca_file) could not be loaded";
    default: return "request failed";
  }
}

}  // namespace

std::optional<SysTime> parse_retry_after(const std::string& value, SysTime now) {
  std::string v = value;
  while (!v.empty() && std::isspace(static_cast<unsigned char>(v.back()))) v.pop_back();
  while (!v.empty() && std::isspace(static_cast<unsigned char>(v.front()))) v.erase(v.begin());
  if (v.empty()) return std::nullopt;
  if (std::all_of(v.begin(), v.end(), [](unsigned char c) { return std::isdigit(c); })) {
    if (v.size() > 9) return std::nullopt;
    return now + std::chrono::seconds(std::stoll(v));
  }
  std::tm tm{};
  std::istringstream in(v);
  in.imbue(std::locale::classic());
  in >> std::get_time(&tm, "%a, %d %b %Y %H:%M:%S GMT");
  if (in.fail()) return std::nullopt;
  // A date past what the clock holds (2262) would overflow it; anything that far means "much
  // later", which the completer caps at retry.max_delay anyway.
  if (tm.tm_year + 1900 >= 2200) {
    tm = std::tm{};
    tm.tm_mday = 1;
    tm.tm_year = 2200 - 1900;
  }
  return std::chrono::system_clock::from_time_t(timegm(&tm));
}

std::string expand_env(const std::string& value) {
  std::string out;
  for (std::size_t i = 0; i < value.size(); ++i) {
    if (value[i] == '$' && i + 1 < value.size() && value[i + 1] == '{') {
      std::size_t end = value.find('}', i + 2);
      if (end == std::string::npos) throw std::runtime_error("unterminated ${ in header value");
      std::string name = value.substr(i + 2, end - i - 2);
      if (auto why = names_database_credentials(name)) throw std::runtime_error("${" + name + "} " + *why);
      const char* v = std::getenv(name.c_str());
      if (!v) throw std::runtime_error("environment variable " + name + " is not set");
      out += v;
      i = end;
    } else {
      out += value[i];
    }
  }
  return out;
}

HttpHandler::HttpHandler(HttpOptions options) : options_(std::move(options)) {
  const std::string& u = options_.url;
  std::size_t scheme_end = u.find("://");
  std::size_t path_start = scheme_end == std::string::npos ? std::string::npos : u.find('/', scheme_end + 3);
  base_ = path_start == std::string::npos ? u : u.substr(0, path_start);
  // User info is no part of where to connect (httplib would take it for the host name and ask
  // the resolver about it): credentials go in headers.
  if (std::size_t at = base_.rfind('@'); at != std::string::npos && scheme_end != std::string::npos)
    base_.erase(scheme_end + 3, at - scheme_end - 2);
  path_ = path_start == std::string::npos ? "/" : u.substr(path_start);
  shown_url_ = redact_url(u);
}

std::string HttpHandler::request_body(const Task& t) {
  std::string b = "{";
  append_task_identity(b, t);
  b += ",\"attempt\":" + std::to_string(t.attempt) + ",\"payload\":" + t.payload + "}";
  return b;
}

std::string HttpHandler::idempotency_key(const Task& t) {
  std::string key = "agentcron-" + std::to_string(t.id) + "-";
  if (t.cron) {
    // One key per occurrence: a recurring task's attempts start at 1 again at every fire.
    std::time_t secs = std::chrono::system_clock::to_time_t(t.occurrence);
    std::tm tm{};
    gmtime_r(&secs, &tm);
    char when[32];
    std::strftime(when, sizeof when, "%Y%m%dT%H%M%S", &tm);
    // Milliseconds too: an @every schedule may fire more than once a second.
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t.occurrence.time_since_epoch()).count() % 1000;
    char millis[8];
    std::snprintf(millis, sizeof millis, ".%03dZ", static_cast<int>(ms < 0 ? ms + 1000 : ms));
    key += std::string(when) + millis + "-";
  }
  return key + std::to_string(t.attempt);
}

namespace {

// The body of a reply as it is read: counted (after decompression) with only its start kept.
// More than `max` bytes, or bytes still coming at `deadline`, stop the reading; the status of a
// reply too large to finish comes from its header, which the response handler saw.
struct BoundedReply {
  std::size_t max = 0, keep = 0;
  std::chrono::steady_clock::time_point deadline{};
  int status = 0;
  std::string start = {};
  std::size_t received = 0;
  bool too_large = false;

  void attach(httplib::Request& req) {
    req.response_handler = [this](const httplib::Response& r) {
      status = r.status;
      return true;
    };
    req.content_receiver = [this](const char* data, std::size_t n, std::uint64_t, std::uint64_t) {
      received += n;
      if (received > max) {
        too_large = true;
        return false;
      }
      if (std::chrono::steady_clock::now() >= deadline) return false;
      if (start.size() < keep) start.append(data, std::min(n, keep - start.size()));
      return true;
    };
  }
};

bool retryable_status(int status) { return status == 408 || status == 429 || status >= 500; }

}  // namespace

TaskOutcome HttpHandler::run(const Task& task, const HandlerContext& ctx) {
  httplib::Client client(base_);
  auto timeout = std::chrono::duration_cast<std::chrono::microseconds>(options_.timeout);
  client.set_connection_timeout(timeout);
  client.set_read_timeout(timeout);
  client.set_write_timeout(timeout);
  client.set_keep_alive(false);
  client.enable_server_certificate_verification(options_.tls_verify);
  if (!options_.ca_file.empty()) client.set_ca_cert_path(options_.ca_file);

  httplib::Request req;
  req.method = options_.method;
  req.path = path_;
  req.body = request_body(task);
  for (const auto& [k, v] : options_.headers) req.headers.emplace(k, v);
  req.headers.emplace("Content-Type", "application/json");
  req.headers.emplace("Idempotency-Key", idempotency_key(task));
  req.headers.emplace("User-Agent", "agentcron/" AGENTCRON_VERSION);
  std::stop_token stop = ctx.stop;
  // The whole exchange within `timeout` (httplib's own limits are per read: a reply dripping a
  // byte at a time would pass them).
  auto deadline = std::chrono::steady_clock::now() + options_.timeout;
  req.progress = [stop, deadline](std::uint64_t, std::uint64_t) {
    return !stop.stop_requested() && std::chrono::steady_clock::now() < deadline;
  };
  // 4 bytes beyond what is kept, so that the cut lands on a character boundary.
  BoundedReply reply{options_.max_response_bytes, std::max<std::size_t>(options_.keep_body, 512) + 4, deadline};
  reply.attach(req);

  std::stop_callback abort_in_flight(ctx.stop, [&client] { client.stop(); });
  httplib::Result res = client.send(req);
  if (ctx.stop.stop_requested()) return TaskOutcome::released("request aborted");
  if (reply.too_large) {
    std::string why = "http: HTTP " + std::to_string(reply.status) + " reply larger than max_response_bytes (" +
                      std::to_string(options_.max_response_bytes) + " bytes, decompressed); reading stopped";
    return retryable_status(reply.status) ? TaskOutcome::retry(why) : TaskOutcome::failure(why);
  }
  if (!res && std::chrono::steady_clock::now() >= deadline)
    return TaskOutcome::retry("http: no complete reply within the timeout of " + format_duration(options_.timeout) + " (" +
                              options_.method + " " + shown_url_ + ")");
  if (!res) {
    // httplib reports a read timeout as a read error: either way the server may answer next time.
    std::string why = "http: " + std::string(describe(res.error())) + " (" + options_.method + " " + shown_url_ + ")";
    if (res.error() == httplib::Error::SSLServerVerification || res.error() == httplib::Error::SSLLoadingCerts)
      return TaskOutcome::failure(why);
    return TaskOutcome::retry(why);
  }
  // The reply as read (res, not the response handler: that is not called for a 204, say).
  const httplib::Response& r = *res;
  const std::string& body = reply.start;
  if (r.status >= 200 && r.status < 300) {
    bool json = r.get_header_value("Content-Type").find("json") != std::string::npos;
    return TaskOutcome::success(json ? truncate(body, options_.keep_body) : std::string());
  }
  std::string detail = "HTTP " + std::to_string(r.status) + (body.empty() ? "" : ": " + truncate(body, 512));
  if (retryable_status(r.status)) {
    std::optional<SysTime> not_before;
    if (r.has_header("Retry-After"))
      not_before = parse_retry_after(r.get_header_value("Retry-After"), std::chrono::system_clock::now());
    return TaskOutcome::retry(detail, not_before);
  }
  return TaskOutcome::failure(detail);
}

}  // namespace agentcron
