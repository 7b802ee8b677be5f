// `agentcron doctor`: connection-pool exhaustion and the other ways a deployment goes wrong,
// diagnosed before they happen. Each check gives a verdict (ok, warn, fail), one line saying what
// it found, and advice saying what to change.
#pragma once
#include <string>
#include <vector>

#include "agentcron/config.hpp"

namespace agentcron {

class Logger;
class PgTaskStore;

struct Finding {
  enum class Verdict { ok, warn, fail } verdict = Verdict::ok;
  std::string check;    // "connections", "pooler", …
  std::string summary;  // what was found
  std::vector<std::string> advice;
};

const char* to_string(Finding::Verdict v);

// Runs every check against the database `store` reaches, as configuration `c` would use it.
// DatabaseErrors propagate (the database is unreachable: that is the first thing to fix).
std::vector<Finding> run_doctor(PgTaskStore& store, const Config& c, Logger& log);

// The findings as text (one block per check) or as a JSON array.
std::string render_findings(const std::vector<Finding>& findings, bool json);

}  // namespace agentcron
