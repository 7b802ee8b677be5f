// The embedded migrations up to a version: a database as an older release left it, to migrate on.
#pragma once

#include <vector>

#include "agentcron/migrator.hpp"

namespace agentcron::testing {

inline std::vector<Migration> migrations_before(int version) {
  std::vector<Migration> out;
  for (const Migration& m : embedded_migrations())
    if (m.version < version) out.push_back(m);
  return out;
}

}  // namespace agentcron::testing
