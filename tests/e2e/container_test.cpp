// The container contract, without a container engine (none runs on these machines): the built
// binary as PID 1 of a new PID namespace (unshare --pid --fork --mount-proc) and as an
// unprivileged user (setpriv), the way a runtime starts an image's entry point.
#include <dirent.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "support/loopback.hpp"
#include "support/files.hpp"
#include "support/process.hpp"
#include "support/test_db.hpp"

namespace agentcron {
namespace {

using namespace std::chrono_literals;
using testing::eventually;
using testing::Process;
using testing::slurp;
using testing::run_agentcron;
using testing::TestDatabase;

// The children of `pid` (every thread's), as the kernel lists them.
std::vector<pid_t> children_of(pid_t pid) {
  std::vector<pid_t> out;
  std::string tasks = "/proc/" + std::to_string(pid) + "/task";
  DIR* dir = ::opendir(tasks.c_str());
  if (!dir) return out;
  while (dirent* e = ::readdir(dir)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream list(tasks + "/" + e->d_name + "/children");
    for (pid_t c; list >> c;) out.push_back(c);
  }
  ::closedir(dir);
  return out;
}

// A port free on the loopback a moment ago (the kernel's pick).
int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  int port = testing::bind_loopback(fd, 0);
  ::close(fd);
  return port;
}

// "<state> <comm>" of a process, from /proc/<pid>/stat: ("Z", "sleep").
std::pair<std::string, std::string> state_of(pid_t pid) {
  std::string stat = slurp("/proc/" + std::to_string(pid) + "/stat");
  auto open = stat.find('('), close = stat.rfind(')');
  if (open == std::string::npos || close == std::string::npos || close + 2 >= stat.size()) return {"", ""};
  return {stat.substr(close + 2, 1), stat.substr(open + 1, close - open - 1)};
}

class ContainerE2E : public ::testing::Test {
 protected:
  TestDatabase db;
  std::string config_path = "/tmp/agentcron-e2e-container-" + std::to_string(::getpid()) + ".toml";
  pid_t worker = -1;  // PID 1 of the namespace, as seen from here
  void TearDown() override {
    if (worker > 0) ::kill(worker, SIGKILL);  // a failed assertion leaves nothing running
    ::unlink(config_path.c_str());
  }
};

TEST_F(ContainerE2E, AsPid1ItRunsAsNobodyReapsOrphansAnswersTheProbeAndDrainsOnSigterm) {
  if (::geteuid() != 0) GTEST_SKIP() << "a new PID namespace (unshare --pid) needs root";
  int port = free_port();
  // An exec handler whose program backgrounds two commands and exits: they are orphans.
  std::ofstream(config_path) << "[database]\nurl = \"" << db.url() << "\"\nconnection_limit = 4\n"
                             << "[scheduler]\nschedule = \"* * * * * *\"\n"
                             << "[metrics]\nlisten = \"127.0.0.1:" << port << "\"\n"
                             << "[log]\nformat = \"json\"\n"
                             << "[handlers.orphans]\ntype = \"exec\"\n"
                             << "command = [\"/bin/sh\", \"-c\", \"sleep 4 & sleep 4 & echo spawned\"]\n";
  ::chmod(config_path.c_str(), 0644);
  Process p({"--config", config_path, "run"}, {},
            {"/usr/bin/unshare", "--pid", "--fork", "--mount-proc", "--kill-child", "/usr/bin/setpriv", "--reuid=nobody",
             "--regid=nogroup", "--clear-groups"});
  ASSERT_TRUE(eventually([&] {
    auto c = children_of(p.pid());
    if (c.empty()) return false;
    worker = c.front();
    return state_of(worker).second == "agentcron";
  }, 10s)) << p.err();
  // PID 1 of its namespace, as user nobody.
  std::string status = slurp("/proc/" + std::to_string(worker) + "/status");
  EXPECT_NE(status.find("NSpid:\t" + std::to_string(worker) + "\t1\n"), std::string::npos) << status;
  EXPECT_NE(status.find("Uid:\t65534\t"), std::string::npos) << status;

  // The HEALTHCHECK: `agentcron probe` asks its /healthz.
  ASSERT_TRUE(eventually([&] { return run_agentcron({"--config", config_path, "probe"}).code == 0; }, 10s)) << p.err();

  db.exec("INSERT INTO agentcron.agent_tasks (kind) SELECT 'orphans' FROM generate_series(1, 3)");
  ASSERT_TRUE(eventually([&] {
    return db.scalar("SELECT count(*) FROM agentcron.agent_tasks WHERE status = 'succeeded'") == 3;
  }, 15s)) << p.err();
  // The six sleeps outlived their shell: they are the worker's children now.
  auto sleepers = [&] {
    int n = 0;
    for (pid_t c : children_of(worker))
      if (state_of(c).second == "sleep") ++n;
    return n;
  };
  EXPECT_TRUE(eventually([&] { return sleepers() > 0; }, 2s)) << "the orphans were not reparented to PID 1";
  // Once they exit, they are waited for: no zombie stays.
  EXPECT_TRUE(eventually([&] {
    if (sleepers() > 0) return false;
    for (pid_t c : children_of(worker))
      if (state_of(c).first == "Z") return false;
    return true;
  }, 10s)) << "zombies left under PID 1";

  // SIGTERM (what `docker stop` sends): the worker drains and exits 0; unshare passes it on.
  ::kill(worker, SIGTERM);
  EXPECT_EQ(p.wait(60s), 0) << p.err();
  worker = -1;
  EXPECT_EQ(run_agentcron({"--config", config_path, "probe", "--timeout", "1s"}).code, 1) << "a probe of a stopped worker";
}

}  // namespace
}  // namespace agentcron
