// Small file helpers of the tests.
#pragma once
#include <fstream>
#include <sstream>
#include <string>

namespace agentcron::testing {

// The whole file ("" when it cannot be read).
inline std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace agentcron::testing
