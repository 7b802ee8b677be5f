// ExecHandler with real child processes: exit codes, stdin, environment, process groups,
// SIGTERM/SIGKILL, grandchildren holding the output, zombies and leaked descriptors.
#include "agentcron/handlers/exec.hpp"
#include "agentcron/reaper.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <sstream>
#include <thread>

#include "agentcron/log.hpp"
#include "agentcron/utf8.hpp"
#include "support/scoped_env.hpp"
#include "support/test_db.hpp"

namespace agentcron {
namespace {

using namespace std::chrono_literals;

class ExecTest : public ::testing::Test {
 protected:
  std::ostringstream logs;
  Logger log{LogFormat::text, LogLevel::info, std::make_shared<spdlog::sinks::ostream_sink_mt>(logs)};
  std::stop_source stop;

  TaskOutcome run(std::vector<std::string> cmd, std::string payload = "{\"n\":1}", Millis timeout = 10s,
                  Millis kill_after = 5s) {
    ExecHandler h(ExecOptions{std::move(cmd), "", {{"EXTRA", "yes"}}, timeout, kill_after}, log);
    Task t;
    t.id = 77;
    t.kind = "script";
    t.attempt = 2;
    t.agent_id = "agent-9";
    t.payload = std::move(payload);
    return h.run(t, HandlerContext{stop.get_token(), std::chrono::steady_clock::now() + 1h});
  }
  static std::vector<std::string> sh(const std::string& script) { return {"/bin/sh", "-c", script}; }

  // Children of this process that are zombies (state Z in /proc).
  static int zombie_children() {
    int n = 0;
    DIR* d = ::opendir("/proc");
    while (dirent* e = ::readdir(d)) {
      if (!std::isdigit(static_cast<unsigned char>(e->d_name[0]))) continue;
      std::ifstream st(std::string("/proc/") + e->d_name + "/stat");
      std::string line;
      std::getline(st, line);
      auto close = line.rfind(')');
      if (close == std::string::npos) continue;
      std::istringstream rest(line.substr(close + 2));
      char state;
      int ppid;
      rest >> state >> ppid;
      if (state == 'Z' && ppid == ::getpid()) ++n;
    }
    ::closedir(d);
    return n;
  }
};

TEST_F(ExecTest, ExitZeroSucceeds) {
  EXPECT_EQ(run({"/bin/true"}).kind, TaskOutcome::Kind::succeeded);
  EXPECT_EQ(zombie_children(), 0);
}

TEST_F(ExecTest, ExitSeventyFiveRetriesOthersFailWithTheOutputTail) {
  auto r75 = run(sh("echo busy; exit 75"));
  EXPECT_EQ(r75.kind, TaskOutcome::Kind::retry);
  EXPECT_EQ(r75.message, "exit 75 (temporary failure): busy\n");
  auto r1 = run(sh("echo to-out; echo to-err >&2; exit 1"));
  EXPECT_EQ(r1.kind, TaskOutcome::Kind::retry);
  EXPECT_EQ(r1.message, "exit 1: to-out\nto-err\n");
}

// The reaper waits for any child it finds; a handler's own children are registered across fork()
// and left alone, so every run still sees its own program's exit status. Orphans are reaped.
TEST_F(ExecTest, AReaperRunningBesideTakesOrphansButNeverAHandlersExitStatus) {
  ReaperOptions o;
  o.interval = 1ms;
  Reaper reaper(o, log);
  reaper.start();
  std::vector<std::thread> runs;
  std::atomic<int> right{0};
  for (int i = 0; i < 4; ++i)
    runs.emplace_back([&] {
      for (int k = 0; k < 10; ++k) {
        auto r = run(sh("exit 75"));
        if (r.kind == TaskOutcome::Kind::retry && r.message.rfind("exit 75", 0) == 0) ++right;
      }
    });
  for (auto& t : runs) t.join();
  EXPECT_EQ(right.load(), 40);
  // A child nobody waits for (an orphan, as PID 1 would inherit it) is the reaper's.
  pid_t orphan = ::fork();
  if (orphan == 0) ::_exit(0);
  EXPECT_TRUE(testing::eventually([&] { return ::kill(orphan, 0) != 0; }, 5s)) << "the orphan was not reaped";
  reaper.request_stop();
  reaper.wait();
  EXPECT_EQ(zombie_children(), 0);
}

// A round walks the children only once one has exited (a WNOWAIT peek first): then it waits for
// the orphan and leaves a handler's own child to its handler; with no child it does nothing.
TEST_F(ExecTest, AReaperRoundTakesTheExitedOrphanAndLeavesAHandlersChild) {
  ReaperOptions o;
  Reaper reaper(o, log);  // not started: its rounds run here
  auto exited = [](pid_t pid) {
    return testing::eventually([pid] {
      siginfo_t info{};
      return ::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == pid;
    }, 5s);
  };
  pid_t owned;
  {
    auto held = lock_own_children();
    owned = ::fork();
    if (owned == 0) ::_exit(0);
    own_child(owned, held);
  }
  pid_t orphan = ::fork();
  if (orphan == 0) ::_exit(0);
  ASSERT_TRUE(exited(owned));
  ASSERT_TRUE(exited(orphan));
  ReaperResult r = reaper.run_once();
  EXPECT_EQ(r.reaped, 1);
  EXPECT_EQ(r.skipped, 1);
  int status = 0;
  EXPECT_EQ(::waitpid(owned, &status, 0), owned);  // still there for its handler
  forget_child(owned);
  r = reaper.run_once();
  EXPECT_EQ(r.reaped + r.skipped, 0);
  EXPECT_EQ(zombie_children(), 0);
}

TEST_F(ExecTest, DeathBySignalFails) {
  auto r = run(sh("kill -9 $$"));
  EXPECT_EQ(r.kind, TaskOutcome::Kind::retry);
  EXPECT_NE(r.message.find("killed by signal 9"), std::string::npos) << r.message;
}

TEST_F(ExecTest, OnlyTheLastFourKilobytesOfOutputAreKept) {
  auto r = run(sh("head -c 100000 /dev/zero | tr '\\0' 'a'; echo END; exit 3"));
  EXPECT_LE(r.message.size(), std::string("exit 3: ").size() + 4096);
  EXPECT_NE(r.message.find("aEND\n"), std::string::npos);
}

TEST_F(ExecTest, PayloadOnStdinAndTaskFieldsInTheEnvironment) {
  auto r = run(sh("cat; echo; echo $AGENTCRON_TASK_ID $AGENTCRON_KIND $AGENTCRON_ATTEMPT $AGENTCRON_AGENT_ID $EXTRA; exit 9"),
               "{\"to\":\"inbox\"}");
  EXPECT_EQ(r.message, "exit 9: {\"to\":\"inbox\"}\n77 script 2 agent-9 yes\n");
}

TEST_F(ExecTest, ALargePayloadIsNotADeadlock) {
  std::string big = "{\"blob\":\"" + std::string(1 << 20, 'x') + "\"}";
  auto r = run(sh("wc -c; exit 4"), big);
  EXPECT_EQ(r.message, "exit 4: " + std::to_string(big.size()) + "\n");
}

TEST_F(ExecTest, NoShellEver) {
  auto r = run({"/bin/echo", "$HOME;", "rm", "-rf", "/"});
  EXPECT_EQ(r.kind, TaskOutcome::Kind::succeeded);
}

TEST_F(ExecTest, MissingProgramFailsPermanently) {
  auto r = run({"/nonexistent/program"});
  EXPECT_EQ(r.kind, TaskOutcome::Kind::failed);
  EXPECT_EQ(r.message, "cannot run /nonexistent/program: No such file or directory");
}

TEST_F(ExecTest, ChildSeesNoDescriptorBeyondTheStandardThree) {
  int leak = ::open("/dev/null", O_RDONLY);  // no O_CLOEXEC: would leak without close_range
  ASSERT_GE(leak, 3);
  auto r = run(sh("ls /proc/self/fd; exit 5"));
  ::close(leak);
  // `ls` itself opens one descriptor for the directory it lists.
  std::istringstream fds(r.message.substr(std::string("exit 5: ").size()));
  std::string fd;
  int beyond = 0;
  while (fds >> fd)
    if (std::stoi(fd) > 3) ++beyond;
  EXPECT_EQ(beyond, 0) << r.message;
}

TEST_F(ExecTest, TimeoutSendsSigtermToTheGroup) {
  auto start = std::chrono::steady_clock::now();
  auto r = run(sh("sleep 30"), "{}", 200ms);
  EXPECT_EQ(r.kind, TaskOutcome::Kind::retry);
  EXPECT_EQ(r.message.rfind("timed out after 200ms", 0), 0u) << r.message;
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  EXPECT_EQ(zombie_children(), 0);
}

TEST_F(ExecTest, AProgramIgnoringSigtermIsKilledAfterKillAfter) {
  auto start = std::chrono::steady_clock::now();
  auto r = run(sh("trap '' TERM; echo armed; while :; do sleep 0.05; done"), "{}", 200ms, 300ms);
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(r.kind, TaskOutcome::Kind::retry);
  EXPECT_GE(took, 500ms);
  EXPECT_LT(took, 5s);
  EXPECT_NE(logs.str().find("ignored SIGTERM; sending SIGKILL"), std::string::npos);
  EXPECT_EQ(zombie_children(), 0);
}

TEST_F(ExecTest, AGrandchildHoldingStdoutDoesNotHangTheWorker) {
  auto start = std::chrono::steady_clock::now();
  auto r = run(sh("(sleep 30 &) ; echo parent-done; exit 0"));
  EXPECT_EQ(r.kind, TaskOutcome::Kind::succeeded);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  EXPECT_EQ(zombie_children(), 0);
}

TEST_F(ExecTest, StopRequestTerminatesAndReportsRelease) {
  std::thread stopper([&] {
    std::this_thread::sleep_for(100ms);  // let the child start
    stop.request_stop();
  });
  auto r = run(sh("sleep 30"));
  stopper.join();
  EXPECT_TRUE(r.cancelled);
  EXPECT_EQ(zombie_children(), 0);
}

// One agent's reply of invalid bytes once killed the worker inside libpq's quoting. Whatever a
// program prints, the outcome's text is valid UTF-8 cut on a character boundary.
TEST_F(ExecTest, InvalidUtf8AndBinaryOutputBecomeReadableText) {
  auto r = run(sh(R"(printf '\377\376 bad '; i=0; while [ $i -lt 1500 ]; do printf '\346\227\245'; i=$((i+1)); done; exit 1)"));
  EXPECT_EQ(r.kind, TaskOutcome::Kind::retry);
  EXPECT_TRUE(r.message.rfind("exit 1: ", 0) == 0) << r.message.substr(0, 40);
  std::string tail = r.message.substr(std::string("exit 1: ").size());
  EXPECT_EQ(valid_utf8(tail), tail);  // nothing left to replace
  EXPECT_LE(tail.size(), 4096u);
  EXPECT_GE(tail.size(), 4090u);      // cut at a boundary near the limit, not emptied
  EXPECT_EQ(tail.size() % 3, 0u);     // whole 3-byte characters only

  auto bin = run(sh(R"(printf '\377\376\000\001\200 end'; exit 3)"));
  EXPECT_EQ(bin.message, "exit 3: \xEF\xBF\xBD\xEF\xBF\xBD\x01\xEF\xBF\xBD end");
}

TEST_F(ExecTest, ExitDataErrorFailsWithoutRetry) {
  auto r = run(sh("echo 'bad payload'; exit 65"));
  EXPECT_EQ(r.kind, TaskOutcome::Kind::failed);
  EXPECT_EQ(r.message, "exit 65 (data error: not retried): bad payload\n");
}

// The executor stops a handler once the task's own deadline has passed, and often wakes before
// the handler's poll, rounded up to whole milliseconds, does: that stop is the time-out, and the
// program's output tail goes with it (it used to read as a plain "stopped", and the tail was lost).
TEST_F(ExecTest, AStopForTheTasksOwnDeadlineIsATimeOutThatKeepsTheOutputTail) {
  ExecHandler h(ExecOptions{sh("echo started; exec sleep 30"), "", {}, 10s, 1s}, log);
  Task t;
  t.id = 5;
  t.kind = "script";
  auto deadline = std::chrono::steady_clock::now() + 2s;  // time for `echo` on a loaded machine
  std::jthread supervisor([&] {  // as the executor's supervisor does it: at the deadline
    std::this_thread::sleep_until(deadline);
    stop.request_stop();
  });
  auto r = h.run(t, HandlerContext{stop.get_token(), deadline, 2s});
  EXPECT_EQ(r.kind, TaskOutcome::Kind::retry);
  EXPECT_EQ(r.message, "timed out after 2s: started\n");
}

// A task's deadline that passed before its program even started: the message names the limit,
// never a negative time.
TEST_F(ExecTest, ATimeoutReportsTheTasksLimitEvenWhenItsDeadlineHadPassed) {
  ExecHandler h(ExecOptions{sh("sleep 30"), "", {}, 10s, 1s}, log);
  Task t;
  t.id = 5;
  t.kind = "script";
  auto r = h.run(t, HandlerContext{stop.get_token(), std::chrono::steady_clock::now() - 12ms, 1ms});
  EXPECT_EQ(r.kind, TaskOutcome::Kind::retry);
  EXPECT_EQ(r.message, "timed out after 1ms");
}

}  // namespace
}  // namespace agentcron

namespace agentcron {
namespace {

// The environment a child sees: the allow-list, inherit_env, the handler's env and AGENTCRON_*;
// never DATABASE_URL, a token from an EnvironmentFile or the worker's own settings.
TEST_F(ExecTest, AChildThatDumpsItsEnvironmentSeesNoSecret) {
  testing::ScopedEnv env{{"DATABASE_URL", "postgres://app:Sup3rSecretPw@db/app"},
                         {"AGENTCRON_DATABASE_URL", "postgres://app:Sup3rSecretPw@db/app"},
                         {"STRIPE_TOKEN", "sk_live_t0k3n"},
                         {"PGPASSWORD", "pgSecretPw"},
                         {"KEEP_ME", "kept"},
                         {"PREFIX_A", "a"}};
  ExecOptions o{sh("env; exit 3"), "", {{"EXTRA", "yes"}}, 10s, 5s};
  o.inherit_env = {"KEEP_ME", "PREFIX_*"};
  Task t;
  t.id = 5;
  t.kind = "dump";
  auto r = ExecHandler(o, log).run(t, HandlerContext{stop.get_token(), std::chrono::steady_clock::now() + 1h});
  for (const char* secret : {"Sup3rSecretPw", "sk_live_t0k3n", "pgSecretPw", "DATABASE_URL", "STRIPE_TOKEN"})
    EXPECT_EQ(r.message.find(secret), std::string::npos) << secret << " reached the child:\n" << r.message;
  for (const char* seen : {"\nKEEP_ME=kept\n", "\nPREFIX_A=a\n", "\nEXTRA=yes\n", "\nAGENTCRON_TASK_ID=5\n",
                           "\nAGENTCRON_KIND=dump\n", "\nPATH="})
    EXPECT_NE(r.message.find(seen), std::string::npos) << seen << " missing:\n" << r.message;
}

TEST(ChildEnvironment, OnlyTheAllowListTheNamedAndTheTasksOwn) {
  Task t;
  t.id = 9;
  t.kind = "k";
  t.attempt = 3;
  std::map<std::string, std::string> parent = {{"PATH", "/bin"}, {"LANG", "C.UTF-8"}, {"LC_TIME", "de_DE"},
                                               {"TZ", "UTC"}, {"HOME", "/root"}, {"USER", "root"},
                                               {"DATABASE_URL", "x"}, {"AGENTCRON_LOG_LEVEL", "debug"},
                                               {"AWS_REGION", "eu"}, {"AWS_SECRET", "s"}};
  auto env = child_environment(t, parent, {"AWS_REGION"}, {{"MODE", "fast"}});
  std::vector<std::string> want = {"AGENTCRON_AGENT_ID=", "AGENTCRON_ATTEMPT=3", "AGENTCRON_KIND=k",
                                   "AGENTCRON_TASK_ID=9", "AWS_REGION=eu", "HOME=/root", "LANG=C.UTF-8",
                                   "LC_TIME=de_DE", "MODE=fast", "PATH=/bin", "TZ=UTC"};
  EXPECT_EQ(env, want);
}

TEST(ChildEnvironment, InheritEnvCannotNameTheDatabasePassword) {
  EXPECT_TRUE(forbidden_inherit("DATABASE_URL"));
  EXPECT_TRUE(forbidden_inherit("DATA*"));
  EXPECT_TRUE(forbidden_inherit("*"));
  EXPECT_TRUE(forbidden_inherit("AGENTCRON_LOG_LEVEL"));
  EXPECT_TRUE(forbidden_inherit("AGENT*"));
  EXPECT_FALSE(forbidden_inherit("AWS_*"));
  EXPECT_FALSE(forbidden_inherit("HTTPS_PROXY"));
}

}  // namespace
}  // namespace agentcron
