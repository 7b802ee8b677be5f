// Renewing the leases of held tasks (see lease_keeper.hpp).
#include "agentcron/lease_keeper.hpp"

#include <algorithm>

#include "agentcron/executor.hpp"
#include "agentcron/log.hpp"
#include "agentcron/service.hpp"
#include "agentcron/task_store.hpp"

namespace agentcron {

void LeaseKeeperOptions::validate() const {
  require_option(!worker.empty(), "lease keeper", "worker must not be empty");
  require_option(lease >= Millis(3), "lease keeper", "lease must be >= 3ms");
}

LeaseKeeper::LeaseKeeper(LeaseKeeperOptions options, TaskStore& store, Executor& executor, Logger& log)
    : options_(validated(std::move(options))),
      store_(store),
      executor_(executor),
      log_(log),
      periodic_("extending leases", options_.interval(), [this](std::stop_token) { run_once(); }, log,
                options_.retry_interval()) {}

LeaseKeeperResult LeaseKeeper::run_once() {
  std::vector<ClaimRef> held = executor_.held_claims();
  auto sent = std::chrono::steady_clock::now();  // the database's new lease starts after this
  std::vector<std::int64_t> extended = store_.extend_leases(held, options_.worker, options_.lease);
  executor_.renewed(extended, sent);
  std::sort(extended.begin(), extended.end());
  std::vector<ClaimRef> missing;
  for (const ClaimRef& c : held)
    if (!std::binary_search(extended.begin(), extended.end(), c.id)) missing.push_back(c);
  LeaseKeeperResult r{static_cast<std::int64_t>(extended.size()), executor_.lose(missing)};
  if (r.lost > 0)
    log_.warn("lost the lease of running tasks (rescued or changed by someone else); stopped their handlers",
              {{"count", r.lost}});
  return r;
}

}  // namespace agentcron
