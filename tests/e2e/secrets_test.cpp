// The built binary never prints a form of the database password: random passwords with / ? # @ :
// in every URL shape, through `config check`, `migrate`, `status` and `run`, against a closed
// port and against a server that refuses the password, in text and JSON logs. And the URL can
// come from a file (DATABASE_URL_FILE, --database-url-file), out of argv and the environment.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "support/process.hpp"
#include "support/secrets.hpp"
#include "support/test_db.hpp"

namespace agentcron {
namespace {

using namespace std::chrono_literals;
using testing::find_leak;
using testing::Process;
using testing::TestDatabase;
using testing::UrlShape;

// The role the test cluster asks a password of (scram-sha-256 on 127.0.0.1, from
// packaging/agentcron-dev); every other role is trusted.
constexpr const char* kPasswordRole = "agentcron_password";

struct CommandRun {
  std::string what;
  std::string output;
};

// One command against `url` with its stdout and stderr; `run` is stopped once it said why it
// cannot work.
CommandRun run_command(const std::string& command, const std::string& url, const std::string& format) {
  std::map<std::string, std::string> env = {{"DATABASE_URL", url}, {"AGENTCRON_METRICS_LISTEN", ""}};
  std::vector<std::string> args = {"--log-format", format};
  if (command == "config check") {
    args.insert(args.end(), {"config", "check"});
  } else {
    args.push_back(command);
  }
  Process p(args, env);
  if (command == "run") {
    // Up at least until the first failed connection is logged (or it exited by itself).
    p.wait_for_log("database unavailable", 20s);
    p.signal(SIGTERM);
  }
  auto code = p.wait(30s);
  return {command + " (" + format + ", exit " + (code ? std::to_string(*code) : "none") + ")", p.out() + p.err()};
}

class Secrets : public ::testing::Test {
 protected:
  TestDatabase db;
  int port = 0;
  void SetUp() override {
    // packaging/agentcron-dev creates the role with the cluster; a cluster made otherwise gets it
    // here (two tests at once may race: either error means it is there).
    db.exec(std::string("DO $$ BEGIN CREATE ROLE ") + kPasswordRole +
            " SUPERUSER LOGIN PASSWORD 'the-right-one'; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; "
            "END $$");
    port = db.port();
  }
  // Every command against a closed port and against a wrong password, in both formats.
  std::vector<CommandRun> everything(UrlShape shape, const std::string& password) {
    std::vector<CommandRun> runs;
    std::string closed = testing::url_with_password(shape, kPasswordRole, password, "127.0.0.1", 1, "agentcron");
    std::string wrong = testing::url_with_password(shape, kPasswordRole, password, "127.0.0.1", port, db.name());
    runs.push_back(run_command("config check", wrong, "text"));
    for (const char* format : {"text", "json"})
      for (const char* command : {"migrate", "status", "run"})
        for (const auto& url : {closed, wrong}) runs.push_back(run_command(command, url, format));
    return runs;
  }
};

TEST_F(Secrets, NoFormOfARandomPasswordIsEverPrinted) {
  unsigned seed = 4242;
  testing::PasswordGenerator gen(seed, /*digits=*/false);
  int refused_by_server = 0;
  for (int i = 0; i < 6; ++i) {
    UrlShape shape = testing::kUrlShapes[i % std::size(testing::kUrlShapes)];
    std::string password = gen.next();
    std::vector<CommandRun> runs = everything(shape, password);
    std::vector<CommandRun> baseline = everything(shape, "Zq");
    for (std::size_t r = 0; r < runs.size(); ++r) {
      auto leak = find_leak(runs[r].output, password, baseline[r].output);
      EXPECT_FALSE(leak) << leak.value_or("") << " printed by " << runs[r].what << " (seed " << seed << ", password #"
                         << i << ", shape " << static_cast<int>(shape) << "):\n"
                         << runs[r].output;
      if (runs[r].output.find("password authentication failed") != std::string::npos) ++refused_by_server;
    }
  }
  // The wrong-password runs did reach the server and were refused by it (not trusted), and the
  // reason reads whole (migrate, status, run; text and JSON).
  EXPECT_EQ(refused_by_server, 6 * 6);
}

TEST_F(Secrets, TheUrlCanComeFromAFileAndStaysOutOfArgvAndTheEnvironment) {
  std::string file = "/tmp/agentcron-e2e-url-" + std::to_string(::getpid());
  std::string url = "postgres://" + std::string(kPasswordRole) + ":the-right-one@127.0.0.1:" + std::to_string(port) +
                    "/" + db.name();
  {
    std::ofstream out(file);
    std::filesystem::permissions(file, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
    out << url << "\n";
  }
  struct Unlink {
    std::string path;
    ~Unlink() { ::unlink(path.c_str()); }
  } unlink_at_end{file};
  auto by_env = testing::run_agentcron({"status"}, {{"DATABASE_URL_FILE", file}, {"DATABASE_URL", ""}});
  // (An empty DATABASE_URL is still set: both set is an error.)
  EXPECT_EQ(by_env.code, 78) << by_env.err;
  EXPECT_EQ(by_env.err, "agentcron: config error: environment DATABASE_URL_FILE: DATABASE_URL is set too; set one of them\n");
  auto by_option = testing::run_agentcron({"--database-url-file", file, "status"});
  EXPECT_EQ(by_option.code, 0) << by_option.err;
  EXPECT_NE(by_option.out.find("pending"), std::string::npos) << by_option.out;
  Process p({"--database-url-file", file, "run"}, {{"AGENTCRON_METRICS_LISTEN", ""}});
  ASSERT_TRUE(p.wait_for_log("worker started", 20s)) << p.err();
  std::ifstream cmdline("/proc/" + std::to_string(p.pid()) + "/cmdline"), environ("/proc/" + std::to_string(p.pid()) + "/environ");
  std::string args((std::istreambuf_iterator<char>(cmdline)), {}), envs((std::istreambuf_iterator<char>(environ)), {});
  EXPECT_EQ(args.find("the-right-one"), std::string::npos);
  EXPECT_EQ(envs.find("the-right-one"), std::string::npos);
  p.signal(SIGTERM);
  EXPECT_EQ(p.wait(20s), 0) << p.err();
}

}  // namespace
}  // namespace agentcron
