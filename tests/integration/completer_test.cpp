// Completer against a real PostgreSQL: when it gathers outcomes into one statement and when it
// writes at once.
#include "agentcron/completer.hpp"

#include <gtest/gtest.h>

#include "agentcron/flow_control.hpp"
#include "support/store_fixture.hpp"

namespace agentcron {
namespace {

using namespace std::chrono_literals;

class CompleterTest : public testing::StoreFixture {
 protected:
  FlowControl flow;  // the executor's side is played by the test: coming(n)

  // The gathering interval is ten minutes: a write the test sees came from the policy, not
  // from the interval running out.
  std::unique_ptr<Completer> completer() {
    CompleterOptions o;
    o.worker = "w1";
    o.flush_interval = 10min;
    auto c = std::make_unique<Completer>(o, store, log, &flow);
    c->start();
    return c;
  }
  std::vector<Task> claim(int n) {
    db.insert_due(n);
    return store.claim_due(ClaimParams{n, {"noop"}, "w1", 60s});
  }
  static FinishedRun succeeded(const Task& t) {
    auto now = std::chrono::system_clock::now();
    return FinishedRun{t, TaskOutcome::success(), now, now, std::nullopt};
  }
  // As the executor reports it: `n` handlers whose outcomes are still to come.
  void coming(int n) { flow.executor_state(16, n, 0); }
  bool succeeded_count_is(std::int64_t n) {
    return testing::eventually(
        [&] { return db.scalar("SELECT count(*) FROM agentcron.agent_tasks WHERE status = 'succeeded'") == n; });
  }
};

TEST_F(CompleterTest, ALoneOutcomeIsWrittenAtOnceWhenNoHandlerIsLeftToFinish) {
  auto c = completer();
  auto tasks = claim(1);
  ASSERT_EQ(tasks.size(), 1u);
  coming(0);
  c->add(succeeded(tasks[0]));
  EXPECT_TRUE(succeeded_count_is(1)) << "the outcome waited for the gathering interval";
  c->stop(std::chrono::steady_clock::now() + 10s);
}

// A handler that ignores its stop can return after shutdown has written the last outcomes: its
// outcome is not queued where nothing writes it any more without a word. It is counted (a `once`
// then exits 69) and logged, and its task stays running until the rescuer takes it.
TEST_F(CompleterTest, AnOutcomeAfterStopIsCountedAndLoggedAsLost) {
  auto c = completer();
  auto tasks = claim(2);
  ASSERT_EQ(tasks.size(), 2u);
  coming(0);
  c->add(succeeded(tasks[0]));
  EXPECT_TRUE(c->stop(std::chrono::steady_clock::now() + 10s));
  EXPECT_EQ(c->stats().after_stop, 0u);
  c->add(succeeded(tasks[1]));
  EXPECT_EQ(c->stats().after_stop, 1u);
  EXPECT_EQ(c->pending(), 0u);
  EXPECT_NE(logs.str().find("a task outcome came after the last write at shutdown"), std::string::npos) << logs.str();
  EXPECT_EQ(db.scalar("SELECT count(*) FROM agentcron.agent_tasks WHERE status = 'succeeded'"), 1);
  EXPECT_EQ(db.scalar("SELECT count(*) FROM agentcron.agent_tasks WHERE status = 'running'"), 1);
}

TEST_F(CompleterTest, OutcomesGatherIntoOneStatementWhileHandlersAreStillRunning) {
  auto c = completer();
  auto tasks = claim(3);
  ASSERT_EQ(tasks.size(), 3u);
  coming(2);  // as the executor counts: the outcome being handed over is no longer coming
  c->add(succeeded(tasks[0]));
  // The writer has seen the first outcome and decided to gather for the two still coming.
  ASSERT_TRUE(testing::eventually([&] { return c->stats().gathers > 0; })) << "the writer never looked at the first outcome";
  c->add(succeeded(tasks[1]));
  coming(0);  // the last handler finishes: its add() must wake the gathering writer
  c->add(succeeded(tasks[2]));
  ASSERT_TRUE(succeeded_count_is(3)) << "the writer slept through the last outcome";
  // One statement, one transaction: one now().
  EXPECT_EQ(db.scalar("SELECT count(DISTINCT updated_at) FROM agentcron.agent_tasks"), 1);
  c->stop(std::chrono::steady_clock::now() + 10s);
}

}  // namespace
}  // namespace agentcron
