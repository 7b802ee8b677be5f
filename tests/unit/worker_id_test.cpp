// default_worker_id(): unique even where every worker is pid 1 on a shared hostname (containers).
#include <gtest/gtest.h>
#include <unistd.h>

#include <regex>

#include "agentcron/worker.hpp"

namespace agentcron {
namespace {

TEST(WorkerId, IsHostPidAndARandomSuffixThatDiffersBetweenWorkers) {
  std::string a = default_worker_id(), b = default_worker_id();
  EXPECT_TRUE(std::regex_match(a, std::regex(".+:" + std::to_string(::getpid()) + ":[0-9a-f]{8}"))) << a;
  EXPECT_NE(a, b);  // same host, same pid: still two workers
}

}  // namespace
}  // namespace agentcron
