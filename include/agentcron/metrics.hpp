// Observability: `metrics.listen` serves /metrics (Prometheus text format), /healthz (the process
// answers) and /readyz (database reachable and the last tick recent; 503 otherwise). The HTTP
// library stays inside metrics.cpp: this header is light.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "agentcron/completer.hpp"
#include "agentcron/poller.hpp"
#include "agentcron/pool.hpp"
#include "agentcron/task_store.hpp"
#include "agentcron/telemetry.hpp"

namespace agentcron {

class Logger;

// What /readyz answers: 200 with "ready", or 503 with the reason.
struct Readiness {
  bool ready = false;
  std::string reason;
};

// One reading of a worker's counters and gauges.
struct MetricsSnapshot {
  std::string worker;
  PollerStats poller;
  CompleterStats completer;
  PoolStats pool;
  int connection_limit = 0;
  int running = 0;       // handlers queued or running
  std::uint64_t leases_lost = 0;  // running tasks whose extend matched no row
  int concurrency = 0;   // executor slots
  std::size_t outcomes_unwritten = 0;
  double seconds_since_tick = -1;  // since the last successful claim round; -1 before the first
  bool circuit_open = false;
  const char* circuit_state = "closed";  // closed, open or half_open
  bool listening = false;  // LISTEN agentcron_due is up
  std::uint64_t cancelled = 0;  // running tasks stopped by a cancel (NOTIFY agentcron_cancel)
  std::int64_t rescued = 0;     // tasks this worker's rescuer moved back (or to failed)
  // The queue as the database has it, sampled at most every few seconds; nullopt before the first.
  std::optional<QueueStatus> queue;
  double queue_sample_age_seconds = 0;
  const Telemetry* telemetry = nullptr;  // histograms and error counters
};

// The Prometheus text exposition (version 0.0.4) of a snapshot.
std::string render_metrics(const MetricsSnapshot& s);

class MetricsServer {
 public:
  struct Sources {
    std::function<std::string()> metrics;  // the body of /metrics
    std::function<Readiness()> readiness;  // /readyz
  };
  MetricsServer(Sources sources, Logger& log);
  ~MetricsServer();  // stops serving
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // Binds `listen` ("host:port"; port 0 takes any free one) and serves on a thread of its own.
  // False, with a warning logged, when the address cannot be bound: the worker runs on without
  // its metrics rather than not at all (several workers on one host share the default port).
  bool start(const std::string& listen);
  void stop();
  int port() const;  // the bound port; 0 when not serving

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace agentcron
