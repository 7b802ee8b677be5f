// /metrics, /healthz and /readyz over cpp-httplib (see metrics.hpp).
#include "agentcron/metrics.hpp"

#include <httplib.h>

#include <chrono>
#include <cstdio>
#include <future>
#include <thread>

#include "agentcron/log.hpp"

namespace agentcron {

namespace {

// Label values escape backslash, double quote and newline (text format 0.0.4).
std::string label_value(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

class Exposition {
 public:
  // A metric family: its HELP and TYPE lines, then its samples.
  Exposition& family(const char* name, const char* type, const char* help) {
    out_ += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
    name_ = name;
    return *this;
  }
  Exposition& sample(double v, const std::string& labels = "") {
    char num[64];
    std::snprintf(num, sizeof num, "%.17g", v);
    out_ += name_ + (labels.empty() ? "" : "{" + labels + "}") + " " + num + "\n";
    return *this;
  }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
  std::string name_;
};

std::string outcome(const char* o) { return std::string("outcome=\"") + o + "\""; }

}  // namespace

std::string render_metrics(const MetricsSnapshot& s) {
  Exposition e;
  e.family("agentcron_info", "gauge", "The worker's identity (locked_by of its tasks).")
      .sample(1, "worker=\"" + label_value(s.worker) + "\"");
  e.family("agentcron_ticks_total", "counter", "Claim rounds started (schedule ticks, notifications, freed slots).")
      .sample(static_cast<double>(s.poller.ticks));
  e.family("agentcron_claims_total", "counter", "Claim statements sent.").sample(static_cast<double>(s.poller.claims));
  e.family("agentcron_claim_errors_total", "counter", "Claim rounds that failed on a database error.")
      .sample(static_cast<double>(s.poller.errors));
  e.family("agentcron_notifications_total", "counter", "NOTIFY agentcron_due received.")
      .sample(static_cast<double>(s.poller.notifications));
  e.family("agentcron_tasks_claimed_total", "counter", "Tasks claimed.").sample(static_cast<double>(s.poller.claimed));
  e.family("agentcron_tasks_finished_total", "counter", "Task outcomes written, by outcome.")
      .sample(static_cast<double>(s.completer.succeeded), outcome("succeeded"))
      .sample(static_cast<double>(s.completer.retried), outcome("retried"))
      .sample(static_cast<double>(s.completer.failed), outcome("failed"))
      .sample(static_cast<double>(s.completer.released), outcome("released"));
  e.family("agentcron_outcome_write_errors_total", "counter", "Outcome writes that failed and were retried.")
      .sample(static_cast<double>(s.completer.write_errors));
  e.family("agentcron_outcomes_not_recorded_total", "counter",
           "Outcomes that matched no row: the task had been rescued or changed meanwhile.")
      .sample(static_cast<double>(s.completer.not_recorded));
  e.family("agentcron_claims_redelivered_total", "counter",
           "Tasks claimed again while this worker still ran them (a claim the database lost); refused.")
      .sample(static_cast<double>(s.poller.redelivered));
  e.family("agentcron_leases_lost_total", "counter",
           "Running tasks whose lease extension matched no row; their handlers were stopped.")
      .sample(static_cast<double>(s.leases_lost));
  e.family("agentcron_outcomes_unwritten", "gauge", "Finished tasks whose outcome is not written yet.")
      .sample(static_cast<double>(s.outcomes_unwritten));
  e.family("agentcron_tasks_running", "gauge", "Tasks in the executor, queued or running.").sample(s.running);
  e.family("agentcron_slots", "gauge", "Executor slots (scheduler.concurrency).").sample(s.concurrency);
  e.family("agentcron_pool_connections", "gauge", "Open database connections, by state.")
      .sample(s.pool.busy, "state=\"busy\"")
      .sample(s.pool.idle, "state=\"idle\"");
  e.family("agentcron_pool_connection_limit", "gauge", "database.connection_limit.").sample(s.connection_limit);
  e.family("agentcron_pool_waiting", "gauge", "Callers waiting for a connection.").sample(s.pool.waiting);
  e.family("agentcron_pool_acquire_timeouts_total", "counter", "Waits for a connection that ran out of pool_timeout.")
      .sample(static_cast<double>(s.pool.acquire_timeouts));
  e.family("agentcron_pool_connections_opened_total", "counter", "Connections opened.")
      .sample(static_cast<double>(s.pool.opened_total));
  e.family("agentcron_pool_connections_discarded_total", "counter", "Connections closed as broken or suspect.")
      .sample(static_cast<double>(s.pool.discarded));
  e.family("agentcron_pool_acquire_wait_seconds_max", "gauge", "Longest wait for a connection so far.")
      .sample(std::chrono::duration<double>(s.pool.acquire_wait_max).count());
  e.family("agentcron_seconds_since_last_tick", "gauge",
           "Since the last claim round that completed; -1 before the first.")
      .sample(s.seconds_since_tick);
  e.family("agentcron_database_circuit_open", "gauge", "1 while the circuit breaker keeps claims off the database.")
      .sample(s.circuit_open ? 1 : 0);
  {
    auto& f = e.family("agentcron_database_circuit_state", "gauge", "The circuit breaker's state: 1 for the current one.");
    for (const char* st : {"closed", "open", "half_open"})
      f.sample(std::string_view(st) == s.circuit_state ? 1 : 0, std::string("state=\"") + st + "\"");
  }
  e.family("agentcron_listening", "gauge", "1 while LISTEN agentcron_due is up.").sample(s.listening ? 1 : 0);
  e.family("agentcron_tasks_cancelled_total", "counter",
           "Running tasks whose handler was stopped because the task was cancelled (NOTIFY agentcron_cancel).")
      .sample(static_cast<double>(s.cancelled));
  e.family("agentcron_tasks_rescued_total", "counter",
           "Tasks whose lease had expired, moved back to pending (or to failed) by this worker's rescuer.")
      .sample(static_cast<double>(s.rescued));
  if (s.queue) {
    const QueueStatus& q = *s.queue;
    auto& tasks = e.family("agentcron_queue_tasks", "gauge",
                           "Tasks in the database by status (planner estimates on a large table, see "
                           "agentcron_queue_estimated; running always counted).");
    for (const auto& [status, n] : q.by_status) tasks.sample(static_cast<double>(n), prom_label("status", status));
    e.family("agentcron_queue_estimated", "gauge", "1 when agentcron_queue_tasks are the planner's estimates.")
        .sample(q.estimated ? 1 : 0);
    e.family("agentcron_queue_due", "gauge",
             "Tasks due now (counted up to 10000; agentcron_queue_due_capped says when it stopped).")
        .sample(static_cast<double>(q.due_now));
    e.family("agentcron_queue_due_capped", "gauge", "1 when agentcron_queue_due is a lower bound.").sample(q.due_capped ? 1 : 0);
    e.family("agentcron_queue_oldest_due_seconds", "gauge", "Age of the oldest due task; 0 when none is due.")
        .sample(q.oldest_due_seconds.value_or(0));
    e.family("agentcron_database_connections", "gauge", "Client connections on the database server, all and agentcron's.")
        .sample(static_cast<double>(q.server_connections), "scope=\"all\"")
        .sample(static_cast<double>(q.agentcron_connections), "scope=\"agentcron\"");
    e.family("agentcron_database_max_connections", "gauge", "The server's max_connections.")
        .sample(static_cast<double>(q.max_connections));
    e.family("agentcron_queue_sample_age_seconds", "gauge", "Since the queue gauges were sampled.")
        .sample(s.queue_sample_age_seconds);
  }
  std::string out = e.take();
  if (s.telemetry) out += s.telemetry->render();
  return out;
}

struct MetricsServer::Impl {
  Sources sources;
  Logger& log;
  httplib::Server server;
  std::future<void> serving;
  int port = 0;
  Impl(Sources s, Logger& l) : sources(std::move(s)), log(l) {}
};

MetricsServer::MetricsServer(Sources sources, Logger& log) : impl_(std::make_unique<Impl>(std::move(sources), log)) {
  httplib::Server& s = impl_->server;
  // Two threads and one request per connection: a scrape now and then, and nothing (no idle
  // keep-alive connection) for shutdown to wait on.
  s.new_task_queue = [] { return new httplib::ThreadPool(2); };
  s.set_keep_alive_max_count(1);
  // SO_REUSEADDR (a restarted worker rebinds at once) but not httplib's default SO_REUSEPORT,
  // with which a second worker on the host would bind the same port and take half the scrapes.
  s.set_socket_options([](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  s.set_read_timeout(2, 0);
  s.set_write_timeout(2, 0);
  Impl* impl = impl_.get();
  s.Get("/metrics", [impl](const httplib::Request&, httplib::Response& res) {
    res.set_content(impl->sources.metrics(), "text/plain; version=0.0.4; charset=utf-8");
  });
  s.Get("/healthz", [](const httplib::Request&, httplib::Response& res) { res.set_content("ok\n", "text/plain"); });
  s.Get("/readyz", [impl](const httplib::Request&, httplib::Response& res) {
    Readiness r = impl->sources.readiness();
    res.status = r.ready ? 200 : 503;
    res.set_content((r.ready ? std::string("ready") : r.reason) + "\n", "text/plain");
  });
}

MetricsServer::~MetricsServer() { stop(); }

bool MetricsServer::start(const std::string& listen) {
  if (listen.empty() || impl_->serving.valid()) return false;
  auto colon = listen.rfind(':');
  std::string host = listen.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  int want = std::stoi(listen.substr(colon + 1));
  httplib::Server& s = impl_->server;
  int port = want == 0 ? s.bind_to_any_port(host) : (s.bind_to_port(host, want) ? want : -1);
  if (port <= 0) {
    impl_->log.warn("metrics.listen: cannot listen there (in use, or not an address of this host); "
                    "/metrics, /healthz and /readyz are off",
                    {{"listen", listen}});
    return false;
  }
  impl_->port = port;
  impl_->serving = std::async(std::launch::async, [&s] { s.listen_after_bind(); });
  impl_->log.info("serving /metrics, /healthz and /readyz", {{"listen", host + ":" + std::to_string(port)}});
  return true;
}

void MetricsServer::stop() {
  if (!impl_->serving.valid()) return;
  // stop() acts only once the accept loop runs: ask until the serving thread has returned.
  do impl_->server.stop();
  while (impl_->serving.wait_for(std::chrono::milliseconds(10)) != std::future_status::ready);
  impl_->serving.get();
  impl_->port = 0;
}

int MetricsServer::port() const { return impl_->port; }

}  // namespace agentcron
