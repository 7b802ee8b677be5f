// Deleting finished tasks past their retention (see janitor.hpp).
#include "agentcron/janitor.hpp"

#include "agentcron/log.hpp"
#include "agentcron/task_store.hpp"

namespace agentcron {

std::int64_t Janitor::run_once(std::stop_token stop) {
  std::int64_t total = 0;
  for (int i = 0; i < max_batches_ && !stop.stop_requested(); ++i) {
    std::int64_t n = store_.delete_finished(succeeded_, failed_, batch_);
    total += n;
    if (n < batch_) break;
  }
  if (total > 0) log_.info("deleted finished tasks past their retention", {{"count", total}});
  return total;
}

}  // namespace agentcron
