// The services against the in-memory FakeTaskStore (no database, no sleeps): the rescuer, the
// janitor, the lease keeper, the completer and the poller — what each asks of the store, what it
// makes of the answers, and what it does when a statement fails.
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>

#include <condition_variable>
#include <mutex>
#include <sstream>

#include "agentcron/completer.hpp"
#include "agentcron/executor.hpp"
#include "agentcron/flow_control.hpp"
#include "agentcron/handlers/handler.hpp"
#include "agentcron/log.hpp"
#include "agentcron/poller.hpp"
#include "agentcron/janitor.hpp"
#include "agentcron/lease_keeper.hpp"
#include "agentcron/periodic.hpp"
#include "agentcron/rescuer.hpp"
#include "support/fake_clock.hpp"
#include "support/fake_task_store.hpp"
#include "support/fn_handler.hpp"
#include "support/test_db.hpp"

namespace agentcron {
namespace {

using namespace std::chrono_literals;
using testing::FakeTaskStore;
using Row = FakeTaskStore::Row;

DatabaseError connection_lost() { return DatabaseError("connection lost", "08006", ErrorClass::transient); }

class ServicesOnFake : public ::testing::Test {
 protected:
  FakeTaskStore store;
  std::ostringstream logs;
  Logger log{LogFormat::text, LogLevel::info, std::make_shared<spdlog::sinks::ostream_sink_mt>(logs)};

  // A running row of `worker` whose lease ran out a second ago.
  std::int64_t expired(int attempts, int max_attempts = 5, std::optional<std::string> cron = std::nullopt) {
    Row r;
    r.status = "running";
    r.locked_by = "gone";
    r.locked_until = store.now_value() - 1s;
    r.attempts = attempts;
    r.max_attempts = max_attempts;
    r.cron = std::move(cron);
    r.claim_token = 99;
    return store.add(r);
  }
  std::int64_t finished(const std::string& status, Millis ago) {
    Row r;
    r.status = status;
    r.finished_at = store.now_value() - ago;
    return store.add(r);
  }
};

// --- Rescuer ---

TEST_F(ServicesOnFake, RescuerReturnsExpiredLeasesToPendingAndFailsTasksWhoseAttemptsAreSpent) {
  std::int64_t again = expired(1), spent = expired(5);
  Row live;
  live.status = "running";
  live.locked_by = "alive";
  live.locked_until = store.now_value() + 30s;
  std::int64_t renewed = store.add(live);
  RescuerResult r = Rescuer({}, store, log).run_once();
  EXPECT_EQ(r.to_pending, 1);
  EXPECT_EQ(r.to_failed, 1);
  EXPECT_EQ(store.row(again).status, "pending");
  EXPECT_EQ(store.row(spent).status, "failed");
  EXPECT_EQ(store.row(renewed).status, "running");
  EXPECT_EQ(store.row(again).last_error, "lease expired: worker gone stopped renewing it");
  ASSERT_EQ(store.runs().size(), 2u);
  EXPECT_EQ(store.runs()[0].outcome, "rescued");
}

TEST_F(ServicesOnFake, RescuerWorksInBatchesUntilAShortOneAndStopsBetweenThemWhenAsked) {
  for (int i = 0; i < 7; ++i) expired(1);
  EXPECT_EQ(Rescuer(RescuerOptions{3}, store, log).run_once().to_pending, 7);
  EXPECT_EQ(store.calls("rescue_expired"), 3);  // 3, 3, then 1: a short batch ends the round
  for (int i = 0; i < 7; ++i) expired(1);
  std::stop_source stop;
  stop.request_stop();
  EXPECT_EQ(Rescuer(RescuerOptions{3}, store, log).run_once(stop.get_token()).to_pending, 3);
  EXPECT_EQ(store.calls("rescue_expired"), 4);
}

TEST_F(ServicesOnFake, RescuerMovesARecurringTaskWithItsAttemptsSpentToItsNextFireTime) {
  std::int64_t hourly = expired(5, 5, "0 * * * *");
  std::int64_t broken = expired(5, 5, "not a schedule");
  RescuerResult r = Rescuer({}, store, log).run_once();
  EXPECT_EQ(r.to_pending, 1);
  EXPECT_EQ(r.to_failed, 1);
  Row h = store.row(hourly);
  EXPECT_EQ(h.status, "pending");
  EXPECT_EQ(h.attempts, 0);
  auto next_hour = std::chrono::ceil<std::chrono::hours>(store.now_value() + 1s);
  EXPECT_EQ(h.scheduled_for, next_hour);
  EXPECT_EQ(store.row(broken).status, "failed");
  EXPECT_FALSE(store.row(broken).last_error.empty());
}

TEST_F(ServicesOnFake, ARescuerStatementThatFailsThrowsForItsPeriodicToRetry) {
  expired(1);
  store.fail("rescue_expired", connection_lost());
  EXPECT_THROW(Rescuer({}, store, log).run_once(), DatabaseError);
  EXPECT_EQ(store.count("running"), 1u);
  EXPECT_EQ(Rescuer({}, store, log).run_once().to_pending, 1);  // the next round does it
}

// --- Janitor ---

TEST_F(ServicesOnFake, JanitorDeletesOnlyWhatIsPastItsRetentionInBoundedBatches) {
  for (int i = 0; i < 1200; ++i) finished("succeeded", 8 * 24h);
  std::int64_t recent = finished("succeeded", 1h);
  std::int64_t failed_recently = finished("failed", 8 * 24h);  // failed ones are kept 30 days
  std::int64_t pending = store.add(Row{});
  JanitorResult first = Janitor({7 * 24h, 30 * 24h, 500, 2}, store, log).run_once();
  EXPECT_EQ(first.deleted, 1000);  // two batches at most
  EXPECT_EQ(first.batches, 2);
  EXPECT_EQ(Janitor({7 * 24h, 30 * 24h, 500, 20}, store, log).run_once().deleted, 200);
  EXPECT_EQ(store.calls("delete_finished"), 3);
  for (std::int64_t kept : {recent, failed_recently, pending}) EXPECT_NO_THROW(store.row(kept));
  store.fail("delete_finished", connection_lost());
  EXPECT_THROW(Janitor({}, store, log).run_once(), DatabaseError);
}

TEST_F(ServicesOnFake, AStartedServiceRunsItsRoundsOnItsOwnThreadUntilStopped) {
  for (int i = 0; i < 3; ++i) finished("succeeded", 8 * 24h);
  JanitorOptions o;
  o.interval = 1ms;
  Janitor janitor(o, store, log);
  janitor.start();
  EXPECT_TRUE(testing::eventually([&] { return store.count("succeeded") == 0; }));
  janitor.request_stop();
  janitor.wait();
  int rounds = store.calls("delete_finished");
  finished("succeeded", 8 * 24h);
  EXPECT_EQ(store.calls("delete_finished"), rounds) << "a round ran after wait() returned";
}

TEST_F(ServicesOnFake, OptionsOutOfRangeAreRefusedWhenTheServiceIsBuilt) {
  EXPECT_THROW(Rescuer(RescuerOptions{0}, store, log), std::invalid_argument);
  JanitorOptions j;
  j.max_batches = 0;
  EXPECT_THROW(Janitor(j, store, log), std::invalid_argument);
  try {
    RescuerOptions r;
    r.interval = Millis(0);
    r.validate();
    ADD_FAILURE() << "a zero interval was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "rescuer: interval must be > 0");
  }
  PollerOptions p;
  p.batch_size = 0;
  EXPECT_THROW(p.validate(), std::invalid_argument);
  EXPECT_THROW(CompleterOptions{}.validate(), std::invalid_argument);  // no worker id
  ExecutorOptions e;
  e.concurrency = 0;
  EXPECT_THROW(e.validate(), std::invalid_argument);
  EXPECT_NO_THROW(PollerOptions{}.validate());
  EXPECT_NO_THROW(ExecutorOptions{}.validate());
}

// --- Executor-backed services: a handler that runs until told to stop ---

class WithExecutor : public ServicesOnFake {
 protected:
  HandlerRegistry handlers;
  std::mutex mu;
  std::vector<FinishedRun> finished_runs;
  std::atomic<int> started{0};
  FlowControl flow;  // before the executor: it reports to it
  std::unique_ptr<Executor> executor;

  void SetUp() override {
    handlers.add("wait", std::make_shared<testing::FnHandler>([this](const Task&, const HandlerContext& ctx) {
      ++started;
      std::mutex m;
      std::condition_variable_any cv;
      std::unique_lock lock(m);
      cv.wait(lock, ctx.stop, [] { return false; });  // until told to stop
      return TaskOutcome::success();
    }));
    handlers.add("noop", std::make_shared<testing::FnHandler>([](const Task&, const HandlerContext&) {
      return TaskOutcome::success();
    }));
    ExecutorOptions o;
    o.concurrency = 2;
    o.hold_until_forgotten = true;
    executor = std::make_unique<Executor>(o, handlers, [this](FinishedRun&& r) {
      std::lock_guard lock(mu);
      finished_runs.push_back(std::move(r));
    }, log, &flow);
  }
  void TearDown() override {
    executor->cancel_all("test over");
    executor->wait_idle(std::chrono::steady_clock::now() + 10s);
  }
  std::vector<Task> claim(const std::string& kind, int n) {
    for (int i = 0; i < n; ++i) {
      Row r;
      r.kind = kind;
      store.add(r);
    }
    return store.claim_due(ClaimParams{n, {kind}, "w1", 60s});
  }
};

TEST_F(WithExecutor, LeaseKeeperRenewsWhatIsHeldAndStopsTheHandlerOfALeaseLostToAnotherWorker) {
  std::vector<Task> tasks = claim("wait", 2);
  ASSERT_EQ(executor->submit(tasks), 2);
  ASSERT_TRUE(testing::eventually([&] { return started == 2; }, 10s));
  store.advance(30s);
  LeaseKeeper keeper({"w1", 60s}, store, *executor, log);
  LeaseKeeperResult r = keeper.run_once();
  EXPECT_EQ(r.extended, 2);
  EXPECT_EQ(r.lost, 0);
  EXPECT_EQ(store.row(tasks[0].id).locked_until, store.now_value() + 60s);
  // The first task was rescued and claimed by another worker meanwhile.
  store.change(tasks[0].id, [](Row& row) {
    row.locked_by = "w2";
    row.claim_token = 1000;
  });
  r = keeper.run_once();
  EXPECT_EQ(r.extended, 1);
  EXPECT_EQ(r.lost, 1);
  EXPECT_EQ(executor->leases_lost(), 1u);
  // Its handler was told to stop; its outcome is dropped (the row is w2's now).
  ASSERT_TRUE(testing::eventually([&] { return executor->busy() == 1; }, 10s));
  std::lock_guard lock(mu);
  EXPECT_TRUE(finished_runs.empty());
}

TEST_F(WithExecutor, ALeaseKeeperStatementThatFailsLosesNothing) {
  std::vector<Task> tasks = claim("wait", 1);
  ASSERT_EQ(executor->submit(tasks), 1);
  store.fail("extend_leases", connection_lost());
  LeaseKeeper keeper({"w1", 60s}, store, *executor, log);
  EXPECT_THROW(keeper.run_once(), DatabaseError);
  EXPECT_EQ(executor->leases_lost(), 0u);
  EXPECT_EQ(keeper.run_once().extended, 1);
}

// --- Completer ---

class CompleterOnFake : public WithExecutor {
 protected:
  std::unique_ptr<Completer> completer() {
    CompleterOptions o;
    o.worker = "w1";
    o.db_retry = Backoff{1ms, 5ms, 2};
    auto c = std::make_unique<Completer>(o, store, log);
    c->start();
    return c;
  }
  static FinishedRun run(const Task& t, TaskOutcome outcome) {
    auto now = std::chrono::system_clock::now();
    return FinishedRun{t, std::move(outcome), now, now, std::nullopt};
  }
  static auto soon() { return std::chrono::steady_clock::now() + 10s; }
};

TEST_F(CompleterOnFake, OutcomesLandOnTheirRowsWithTheirRuns) {
  std::vector<Task> t = claim("noop", 3);
  auto c = completer();
  c->add(run(t[0], TaskOutcome::success()));
  c->add(run(t[1], TaskOutcome::retry("busy")));
  c->add(run(t[2], TaskOutcome::failure("bad payload")));
  ASSERT_TRUE(c->flush(soon()));
  EXPECT_EQ(store.row(t[0].id).status, "succeeded");
  EXPECT_EQ(store.row(t[1].id).status, "pending");
  EXPECT_GT(store.row(t[1].id).scheduled_for, store.now_value());  // a retry waits its backoff
  EXPECT_EQ(store.row(t[2].id).status, "failed");
  EXPECT_EQ(store.row(t[2].id).last_error, "bad payload");
  // A run row for the retry and the failure; a one-off task's success is recorded on its row.
  ASSERT_EQ(store.runs().size(), 2u);
  EXPECT_EQ(store.runs()[0].outcome, "retry");
  EXPECT_EQ(store.runs()[1].outcome, "failed");
  EXPECT_EQ(c->stats().succeeded, 1u);
  EXPECT_EQ(c->pending(), 0u);
}

TEST_F(CompleterOnFake, RunOnceWritesOneBatchOnTheCallersThreadAndPutsBackWhatFailed) {
  std::vector<Task> t = claim("noop", 2);
  CompleterOptions o;
  o.worker = "w1";
  o.max_batch = 1;
  Completer c(o, store, log);  // not started: no writer thread
  c.add(run(t[0], TaskOutcome::success()));
  c.add(run(t[1], TaskOutcome::success()));
  store.fail("complete_many", connection_lost(), 1);
  CompleterRound failed = c.run_once();
  EXPECT_EQ(failed.taken, 1u);
  EXPECT_FALSE(failed.ok);
  EXPECT_EQ(c.pending(), 2u) << "a failed write lost its outcome";
  CompleterRound first = c.run_once();
  EXPECT_TRUE(first.ok);
  EXPECT_EQ(first.taken, 1u);  // max_batch
  EXPECT_EQ(store.row(t[0].id).status, "succeeded");
  EXPECT_EQ(store.row(t[1].id).status, "running");
  EXPECT_EQ(c.run_once().taken, 1u);
  EXPECT_EQ(c.run_once().taken, 0u);
  EXPECT_EQ(store.row(t[1].id).status, "succeeded");
}

TEST_F(CompleterOnFake, AWriteThatFailsTransientlyIsRetriedUntilItLands) {
  std::vector<Task> t = claim("noop", 1);
  auto c = completer();
  store.fail("complete_many", connection_lost(), 2);
  c->add(run(t[0], TaskOutcome::success()));
  ASSERT_TRUE(c->flush(soon()));
  EXPECT_EQ(store.row(t[0].id).status, "succeeded");
  EXPECT_EQ(store.calls("complete_many"), 3);
  EXPECT_EQ(c->stats().write_errors, 2u);
}

TEST_F(CompleterOnFake, AnOutcomeTheDatabaseRefusesBecomesAFailureWithItsReason) {
  std::vector<Task> t = claim("noop", 1);
  auto c = completer();
  store.fail("complete_many", DatabaseError("value too long for type character varying(8)", "22001", ErrorClass::permanent));
  c->add(run(t[0], TaskOutcome::success("a result the database will not take")));
  ASSERT_TRUE(c->flush(soon()));
  Row row = store.row(t[0].id);
  EXPECT_EQ(row.status, "failed");
  EXPECT_NE(row.last_error.find("the database refused this run's outcome"), std::string::npos) << row.last_error;
  EXPECT_EQ(row.result, "");  // written without what was refused
}

TEST_F(CompleterOnFake, AnOutcomeForARowThatMovedOnIsCountedNotRecorded) {
  std::vector<Task> t = claim("noop", 1);
  store.change(t[0].id, [](Row& row) { row.claim_token = 1000; });  // rescued and claimed again
  auto c = completer();
  c->add(run(t[0], TaskOutcome::success()));
  ASSERT_TRUE(c->flush(soon()));
  EXPECT_EQ(c->stats().not_recorded, 1u);
  EXPECT_EQ(store.row(t[0].id).status, "running");
}

// --- Poller ---

class PollerOnFake : public WithExecutor {
 protected:
  testing::FakeClock clock;
  CircuitBreaker breaker{2, 30s, clock};
  std::unique_ptr<Poller> poller(int batch_size, std::vector<std::string> kinds = {"wait"}) {
    PollerOptions o;
    o.batch_size = batch_size;
    o.worker = "w1";
    o.kinds = std::move(kinds);
    o.listen = false;
    return std::make_unique<Poller>(o, store, *executor, flow, breaker, log);
  }
  void due(const std::string& kind, int n) {
    for (int i = 0; i < n; ++i) {
      Row r;
      r.kind = kind;
      store.add(r);
    }
  }
};

TEST_F(PollerOnFake, ClaimsNoMoreThanTheFreeSlotsLessTheUnwrittenOutcomes) {
  due("wait", 5);
  auto p = poller(50);
  TickResult r = p->run_once();
  EXPECT_EQ(r.claimed, 2);  // concurrency 2
  EXPECT_TRUE(r.more_due);
  EXPECT_EQ(store.count("running"), 2u);
  EXPECT_EQ(p->run_once().claimed, 0);  // no room: no statement either
  EXPECT_EQ(store.calls("claim_due"), 1);
}

// A round with no room sends nothing; it refreshes readiness only while the store's last
// statement was answered: outcomes unwritten during an outage fill the room, and such rounds
// must not keep the worker ready.
TEST_F(PollerOnFake, ARoundWithNoRoomCountsForReadinessOnlyWhileTheDatabaseAnswers) {
  due("wait", 5);
  auto p = poller(50);
  p->run_once();  // fills both slots
  auto claimed_at = p->last_tick();
  ASSERT_NE(claimed_at, std::chrono::steady_clock::time_point{});
  store.fail("complete_many", DatabaseError("timeout", "57014", ErrorClass::transient));
  EXPECT_THROW(store.complete_many({Completion{}}, "w1"), DatabaseError);
  ASSERT_FALSE(store.answering());
  store.extend_leases({}, "w1", 60s);  // sends nothing, so proves nothing
  ASSERT_FALSE(store.answering());
  EXPECT_EQ(p->run_once().claimed, 0);
  EXPECT_EQ(p->last_tick(), claimed_at);  // not refreshed
  store.rescue_expired(10);               // a write the database answers again
  EXPECT_EQ(p->run_once().claimed, 0);
  EXPECT_GT(p->last_tick(), claimed_at);
  // A value refused, a lock conflict or a failed read says nothing against the database itself.
  store.fail("complete_many", DatabaseError("bad value", "22021", ErrorClass::permanent));
  store.fail("complete_many", DatabaseError("lock timeout", "55P03", ErrorClass::transient));
  store.fail("status", DatabaseError("timeout", "57014", ErrorClass::transient));
  EXPECT_THROW(store.complete_many({Completion{}}, "w1"), DatabaseError);
  EXPECT_THROW(store.complete_many({Completion{}}, "w1"), DatabaseError);
  EXPECT_THROW(store.status(), DatabaseError);
  EXPECT_TRUE(store.answering());
  // A role or schema the database refuses is the database refusing this worker.
  store.fail("complete_many", DatabaseError("permission denied", "42501", ErrorClass::permanent));
  EXPECT_THROW(store.complete_many({Completion{}}, "w1"), DatabaseError);
  EXPECT_FALSE(store.answering());
}

// A claim whose kinds are all limited ([handlers.<kind>] concurrency) takes at most their free
// slots: it asks for no more, or it would lock a whole batch of rows it leaves, which other
// workers' claims skip (coming back short, as if nothing more were due).
TEST_F(PollerOnFake, AClaimOfLimitedKindsAsksForNoMoreThanTheirFreeSlots) {
  ExecutorOptions o;
  o.concurrency = 20;
  o.kind_limits = {{"hold", 2}, {"wait", 3}};
  executor.reset();  // its threads gone: the registry may change
  // Handlers that return only when stopped, so that the free slots stay as each claim left them.
  handlers.add("hold", std::make_shared<testing::FnHandler>([](const Task&, const HandlerContext& ctx) {
    std::mutex m;
    std::condition_variable_any cv;
    std::unique_lock lock(m);
    cv.wait(lock, ctx.stop, [] { return false; });
    return TaskOutcome::success();
  }));
  handlers.add("free", std::make_shared<testing::FnHandler>([](const Task&, const HandlerContext&) {
    return TaskOutcome::success();
  }));
  executor = std::make_unique<Executor>(o, handlers, [](FinishedRun&&) {}, log, &flow);
  due("wait", 10);
  auto limited = poller(50, {"wait"});
  EXPECT_EQ(limited->run_once().claimed, 3);
  EXPECT_EQ(store.claim_limits(), std::vector<int>{3});
  // With a kind that has no limit, every free slot is the limit: that kind may take all of them.
  due("hold", 10);
  auto mixed = poller(50, {"hold", "free"});
  mixed->run_once();
  // The free slots (20 less the 3 of "wait"); it took hold's 2, then "free" alone asked the rest.
  EXPECT_EQ(store.claim_limits(), (std::vector<int>{3, 17, 15}));
}

TEST_F(PollerOnFake, ABacklogOfUnwrittenOutcomesCountsAgainstTheRoom) {
  due("wait", 5);
  auto p = poller(50);
  flow.unwritten(1);  // as the completer reports it
  EXPECT_EQ(p->run_once().claimed, 1);
}

TEST_F(PollerOnFake, ClaimsInBatchesUntilAShortOne) {
  ExecutorOptions o;
  o.concurrency = 20;
  executor.reset();  // first: its teardown reports to the flow control too
  executor = std::make_unique<Executor>(o, handlers, [](FinishedRun&&) {}, log, &flow);
  due("noop", 7);
  auto p = poller(3, {"noop"});
  TickResult r = p->run_once();
  EXPECT_EQ(r.claimed, 7);
  EXPECT_EQ(r.batches, 3);
  EXPECT_FALSE(r.more_due);
  EXPECT_EQ(p->stats().largest_claim, 3);
}

TEST_F(PollerOnFake, FailedClaimsOpenTheBreakerWhichSkipsTheDatabaseUntilItsCooldownEnds) {
  due("wait", 1);
  auto p = poller(50);
  store.fail("claim_due", connection_lost(), 2);
  EXPECT_THROW(p->run_once(), DatabaseError);
  EXPECT_THROW(p->run_once(), DatabaseError);
  EXPECT_EQ(breaker.state(), CircuitBreaker::State::open);
  EXPECT_THROW(p->run_once(), BreakerOpen);
  EXPECT_EQ(store.calls("claim_due"), 2);  // the open breaker sent nothing
  clock.t += 31s;                          // cooldown over: one probe goes, succeeds, closes it
  EXPECT_EQ(p->run_once().claimed, 1);
  EXPECT_EQ(breaker.state(), CircuitBreaker::State::closed);
}

TEST_F(PollerOnFake, OnceTakesOneWholeBatchWhateverTheFreeSlots) {
  due("wait", 5);
  EXPECT_EQ(poller(50)->claim_batch(4), 4);  // 2 run, 2 queue in the executor
  EXPECT_EQ(store.count("running"), 4u);
  EXPECT_EQ(executor->busy(), 4);
}

TEST_F(PollerOnFake, OnceDrainClaimsUntilNothingIsDueOrItsLimit) {
  due("noop", 5);
  auto p = poller(2, {"noop"});
  int made_room = 0;
  EXPECT_EQ(drain(*p, *executor, 3, 1, {}, [&] { ++made_room; }), 3);
  EXPECT_EQ(drain(*p, *executor, INT_MAX, 1, {}, [&] { ++made_room; }), 2);
  EXPECT_EQ(store.count("pending"), 0u);
  std::stop_source stop;
  stop.request_stop();
  due("noop", 1);
  EXPECT_EQ(drain(*p, *executor, INT_MAX, 1, stop.get_token(), [] {}), 0);  // a signal: no claim
}

}  // namespace
}  // namespace agentcron
