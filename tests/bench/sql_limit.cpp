// The plain-SQL limit: the worker's own claim and complete statements (TaskStore) in a loop on
// one connection, with no executor, poller or completer around them — the ceiling any worker of
// this design can reach on the database. Prints rows per second.
//   agentcron_sql_limit CONNINFO BATCH
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "agentcron/config.hpp"
#include "agentcron/log.hpp"
#include "agentcron/pool.hpp"
#include "agentcron/pg_task_store.hpp"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s CONNINFO BATCH\n", argv[0]);
    return 64;
  }
  agentcron::Config c;
  c.database.url = argv[1];
  c.database.connection_limit = 1;
  int batch = std::atoi(argv[2]);
  agentcron::Logger log(agentcron::LogFormat::text, agentcron::LogLevel::warn);
  agentcron::ConnectionPool pool(agentcron::PoolOptions::from_config(c, "sql-limit"), log);
  agentcron::PgTaskStore store(pool, agentcron::StoreOptions::from_config(c), log);
  auto start = std::chrono::steady_clock::now();
  long long total = 0;
  while (true) {
    auto tasks = store.claim_due(agentcron::ClaimParams{batch, {"noop"}, "sql-limit", std::chrono::seconds(60)});
    if (tasks.empty()) break;
    std::vector<agentcron::Completion> done(tasks.size());
    auto now = std::chrono::system_clock::now();
    for (std::size_t i = 0; i < tasks.size(); ++i) {
      done[i].id = tasks[i].id;
      done[i].claim_token = tasks[i].claim_token;
      done[i].attempt = tasks[i].attempt;
      done[i].started_at = done[i].finished_at = now;
    }
    store.complete_many(done, "sql-limit");
    total += static_cast<long long>(tasks.size());
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%lld %.3f %.0f\n", total, secs, static_cast<double>(total) / secs);
  return 0;
}
