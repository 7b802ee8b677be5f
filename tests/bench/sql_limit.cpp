// The plain-SQL limit: the worker's own claim and complete statements (TaskStore) in a loop on
// one connection, with no executor, poller or completer around them — the ceiling any worker of
// this design can reach on the database. Prints rows per second.
//   agentcron_sql_limit CONNINFO BATCH          claim a batch, complete it, again
//   agentcron_sql_limit CONNINFO BATCH split    every batch claimed first, then every batch
//                                               completed: each statement's rate on its own
// Output: "TASKS SECONDS RATE", and with `split` also "CLAIM_RATE COMPLETE_RATE".
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "agentcron/config.hpp"
#include "agentcron/log.hpp"
#include "agentcron/pool.hpp"
#include "agentcron/pg_task_store.hpp"

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::vector<agentcron::Completion> successes(const std::vector<agentcron::Task>& tasks) {
  std::vector<agentcron::Completion> done(tasks.size());
  auto now = std::chrono::system_clock::now();
  for (std::size_t i = 0; i < tasks.size(); ++i) {
    done[i].id = tasks[i].id;
    done[i].claim_token = tasks[i].claim_token;
    done[i].attempt = tasks[i].attempt;
    done[i].started_at = done[i].finished_at = now;
  }
  return done;
}

}  // namespace

int main(int argc, char** argv) {
  bool split = argc == 4 && std::strcmp(argv[3], "split") == 0;
  if (argc != 3 && !split) {
    std::fprintf(stderr, "usage: %s CONNINFO BATCH [split]\n", argv[0]);
    return 64;
  }
  agentcron::Config c;
  c.database.url = argv[1];
  c.database.connection_limit = 1;
  int batch = std::atoi(argv[2]);
  agentcron::Logger log(agentcron::LogFormat::text, agentcron::LogLevel::warn);
  agentcron::ConnectionPool pool(agentcron::PoolOptions::from_config(c, "sql-limit"), log);
  agentcron::PgTaskStore store(pool, agentcron::StoreOptions::from_config(c), log);
  auto claim = [&] {
    return store.claim_due(agentcron::ClaimParams{batch, {"noop"}, "sql-limit", std::chrono::seconds(600)});
  };
  auto start = Clock::now();
  long long total = 0;
  if (!split) {
    while (true) {
      auto tasks = claim();
      if (tasks.empty()) break;
      store.complete_many(successes(tasks), "sql-limit");
      total += static_cast<long long>(tasks.size());
    }
    double secs = seconds_since(start);
    std::printf("%lld %.3f %.0f\n", total, secs, static_cast<double>(total) / secs);
    return 0;
  }
  std::vector<std::vector<agentcron::Task>> batches;
  while (true) {
    auto tasks = claim();
    if (tasks.empty()) break;
    total += static_cast<long long>(tasks.size());
    batches.push_back(std::move(tasks));
  }
  double claiming = seconds_since(start);
  auto completing_start = Clock::now();
  for (const auto& tasks : batches) store.complete_many(successes(tasks), "sql-limit");
  double completing = seconds_since(completing_start);
  double secs = claiming + completing, n = static_cast<double>(total);
  std::printf("%lld %.3f %.0f %.0f %.0f\n", total, secs, n / secs, n / claiming, n / completing);
  return 0;
}
