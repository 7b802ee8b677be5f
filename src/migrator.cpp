// Applying and listing migrations (see migrator.hpp). The SQL itself runs in the task store.
#include "agentcron/migrator.hpp"

#include <cstdint>
#include <cstdio>
#include <string_view>

#include "agentcron/log.hpp"
#include "agentcron/retry.hpp"
#include "agentcron/pg_task_store.hpp"

namespace agentcron {

std::string migration_checksum(const std::string& sql) {
  std::uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : sql) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

std::string migration_file_name(int version, const std::string& name) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%04d_", version);
  return buf + name + ".sql";
}

Migrator::Migrator(PgTaskStore& store, Logger& log, std::vector<Migration> migrations)
    : store_(store), log_(log), migrations_(std::move(migrations)) {}

std::vector<MigrationState> Migrator::status() {
  auto applied = store_.applied_migrations();
  std::vector<MigrationState> out;
  for (const auto& m : migrations_) {
    MigrationState s{m.version, m.name, false, "", false};
    for (const auto& a : applied) {
      if (a.version != m.version) continue;
      s.applied = true;
      s.applied_at = a.applied_at;
      s.changed = a.checksum != migration_checksum(m.sql);
    }
    out.push_back(s);
  }
  return out;
}

int Migrator::migrate() {
  // Check every applied migration first: a changed file stops everything before any new one runs.
  for (const auto& s : status())
    if (s.changed)
      throw MigrationChanged("migration " + migration_file_name(s.version, s.name) +
                             " has changed since it was applied; refusing to migrate");
  int applied = 0;
  for (const auto& m : migrations_) {
    bool ran;
    try {
      ran = store_.apply_migration(m.version, m.name, m.sql, migration_checksum(m.sql));
    } catch (const MigrationChanged&) {
      throw;
    } catch (const DatabaseError& e) {
      // Which file failed. Each runs in a transaction of its own: it left nothing behind, unless
      // the connection broke during its COMMIT. A lock it could not have (0009 waits at most 5 s
      // for the table's) is another transaction's, and the same migrate passes once that ends.
      std::string cause = e.what();
      constexpr std::string_view kStoreSays = "migrate: ";  // apply_migration's name for its statement
      if (cause.starts_with(kStoreSays)) cause.erase(0, kStoreSays.size());
      std::string what = "migration " + migration_file_name(m.version, m.name) +
                         (e.error_class() == ErrorClass::in_doubt
                              ? " may or may not have been applied (see `agentcron migrate --status`): "
                              : " failed, nothing of it applied: ") +
                         cause;
      if (e.sqlstate() == "55P03") what += "; another transaction holds a lock it needs: migrate again once that ends";
      throw DatabaseError(what, e.sqlstate(), e.error_class());
    }
    if (ran) {
      log_.info("applied migration", {{"version", m.version}, {"name", m.name}});
      ++applied;
    }
  }
  return applied;
}

}  // namespace agentcron
