// Migrator: applies the SQL migrations compiled into the binary, in order, each in its own
// transaction under an advisory lock, and refuses to go on when an applied one has changed.
#pragma once
#include <string>
#include <vector>

namespace agentcron {

class PgTaskStore;
class Logger;

struct Migration {
  int version;
  const char* name;
  const char* sql;
};

// The migrations in migrations/*.sql, in version order (generated at build time).
const std::vector<Migration>& embedded_migrations();

// "0001_init.sql": the file a migration came from.
std::string migration_file_name(int version, const std::string& name);

// A stable checksum of a migration's text (FNV-1a 64, hex).
std::string migration_checksum(const std::string& sql);

struct MigrationState {
  int version;
  std::string name;
  bool applied;
  std::string applied_at;  // "" when pending
  bool changed;            // applied with another checksum
};

class Migrator {
 public:
  Migrator(PgTaskStore& store, Logger& log, std::vector<Migration> migrations = embedded_migrations());
  // Applies pending migrations; returns how many it applied. Throws DatabaseError when an applied
  // migration's file changed (naming it) or a migration fails.
  int migrate();
  std::vector<MigrationState> status();

 private:
  PgTaskStore& store_;
  Logger& log_;
  std::vector<Migration> migrations_;
};

}  // namespace agentcron
