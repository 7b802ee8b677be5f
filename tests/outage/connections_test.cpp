// `agentcron doctor` on a server whose max_connections is nearly used up: the check the whole
// project exists for. It takes every connection of the shared cluster but two, so ctest runs it
// alone (with the outage tests).
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <pqxx/pqxx>
#include <vector>

#include "support/process.hpp"
#include "support/test_db.hpp"

namespace agentcron {
namespace {

using testing::run_agentcron;
using testing::TestDatabase;

TEST(ConnectionsOutage, DoctorIsRedWhenMaxConnectionsIsNearlyUsedUpAndSaysWhatToChange) {
  TestDatabase db;
  std::string config = "/tmp/agentcron-outage-doctor-" + std::to_string(::getpid()) + ".toml";
  std::ofstream(config) << "[database]\nurl = \"" << db.url() << "\"\nconnection_limit = 4\n"
                        << "[handlers.noop]\ntype = \"notify\"\n";
  auto max = db.scalar("SELECT current_setting('max_connections')::int");
  auto used = db.scalar("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'");
  {
    // An application's pool that grew until two connections were left: one for doctor, one spare.
    std::vector<std::unique_ptr<pqxx::connection>> pool;
    for (std::int64_t i = 0; i < max - used - 2; ++i)
      pool.push_back(std::make_unique<pqxx::connection>(db.conninfo() + " application_name=prisma-app"));
    auto r = run_agentcron({"--config", config, "doctor"});
    EXPECT_EQ(r.code, 1) << r.out << r.err;
    auto at = r.out.find("[fail] connections: " + std::to_string(max - 1) + " of " + std::to_string(max) +
                         " connections in use (100 %, server max_connections");
    EXPECT_NE(at, std::string::npos) << r.out;
    EXPECT_NE(r.out.find("prisma-app " + std::to_string(max - used - 2)), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("1 connection(s) left; one more agentcron worker with this configuration may open 4"),
              std::string::npos)
        << r.out;
    EXPECT_NE(r.out.find("lower database.connection_limit"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("raise max_connections"), std::string::npos) << r.out;
  }
  // With the application's pool closed, the same server is fine.
  ASSERT_TRUE(testing::eventually([&] {
    return db.scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'prisma-app'") == 0;
  }));
  auto ok = run_agentcron({"--config", config, "doctor"});
  EXPECT_EQ(ok.code, 0) << ok.out << ok.err;
  ::unlink(config.c_str());
}

}  // namespace
}  // namespace agentcron
