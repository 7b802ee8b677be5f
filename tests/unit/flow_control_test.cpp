// FlowControl: the room a claim may take and when the poller is woken early. Pure logic: the
// test plays the executor, the completer and the poller, and counts the wake-ups.
#include "agentcron/flow_control.hpp"

#include <gtest/gtest.h>

namespace agentcron {
namespace {

class FlowControlTest : public ::testing::Test {
 protected:
  FlowControl flow{0, 10};
  int wakes = 0;
  void SetUp() override { flow.set_wake([this] { ++wakes; }); }
};

TEST_F(FlowControlTest, RoomIsTheFreeSlotsLessTheUnwrittenOutcomes) {
  flow.executor_state(8, 3, 0);
  EXPECT_EQ(flow.room(), 5);
  flow.unwritten(2);
  EXPECT_EQ(flow.room(), 3);
  // After a SIGHUP lowered the concurrency below what runs: no free slot, not a negative one.
  flow.executor_state(2, 3, 0);
  EXPECT_EQ(flow.state().free_slots(), 0);
  EXPECT_EQ(flow.room(), -2);
}

TEST_F(FlowControlTest, ASlotOfAKindItsLimitHeldBackMakesMoreDueAndWakesThePoller) {
  flow.executor_state(20, 2, 0);
  flow.set_more_due(false);  // the last claim came back short: only the limit stopped it
  flow.set_held_back({"report"});
  flow.kind_freed("mail", 1, 1);  // not held back: nothing
  EXPECT_EQ(wakes, 0);
  EXPECT_FALSE(flow.more_due());
  auto generation = flow.freed_generation();
  flow.kind_freed("report", 1, 2);
  EXPECT_EQ(wakes, 1);
  EXPECT_TRUE(flow.more_due());
  EXPECT_NE(flow.freed_generation(), generation);
  // A large limit wakes once half a batch (10) of it is free, not at every task.
  flow.set_held_back({"bulk"});
  flow.kind_freed("bulk", 1, 50);
  flow.kind_freed("bulk", 4, 50);
  EXPECT_EQ(wakes, 1);
  flow.kind_freed("bulk", 5, 50);
  EXPECT_EQ(wakes, 2);
  flow.set_held_back({});  // the next claim found no more of either
  flow.kind_freed("report", 2, 2);
  EXPECT_EQ(wakes, 2);
}

TEST_F(FlowControlTest, OutcomesComingLeaveOutTheOneBeingHandedOver) {
  flow.executor_state(8, 3, 1);
  EXPECT_EQ(flow.outcomes_coming(), 2);
  flow.executor_state(8, 1, 1);
  EXPECT_EQ(flow.outcomes_coming(), 0);
}

TEST_F(FlowControlTest, AFreedSlotWakesThePollerOnlyWhenMoreIsDueAndHalfABatchFits) {
  flow.executor_state(20, 20, 0);  // every slot busy
  flow.set_more_due(true);
  for (int busy = 19; busy >= 16; --busy) flow.executor_state(20, busy, 0);
  EXPECT_EQ(wakes, 0) << "woken for fewer than half a batch (10) of room";
  flow.executor_state(20, 15, 0);  // 5 free of a batch of 10: worth a claim
  EXPECT_EQ(wakes, 1);
  flow.set_more_due(false);
  flow.executor_state(20, 10, 0);
  EXPECT_EQ(wakes, 1) << "woken although the last claim came back short";
}

TEST_F(FlowControlTest, WithFewSlotsOneFreeSlotIsWorthAClaim) {
  flow.executor_state(2, 2, 0);
  flow.set_more_due(true);
  flow.executor_state(2, 1, 0);
  EXPECT_EQ(wakes, 1);
}

TEST_F(FlowControlTest, AHandedOverOutcomeDoesNotWakeButItsWriteDoes) {
  flow.executor_state(2, 2, 0);
  flow.set_more_due(true);
  // A handler returns: its outcome goes to the completer, then its slot frees up. The room is
  // what it was (the outcome is unwritten): no wake-up.
  flow.executor_state(2, 2, 1);
  flow.unwritten(1);
  flow.executor_state(2, 2, 0);
  flow.executor_state(2, 1, 0);
  EXPECT_EQ(flow.room(), 0);
  EXPECT_EQ(wakes, 0);
  flow.unwritten(0);  // written
  EXPECT_EQ(wakes, 1);
}

TEST_F(FlowControlTest, ReportsThatShrinkTheRoomNeverWake) {
  flow.executor_state(4, 0, 0);
  flow.set_more_due(true);  // room for a claim: one wake-up
  ASSERT_EQ(wakes, 1);
  flow.executor_state(4, 2, 0);
  flow.unwritten(1);
  flow.executor_state(4, 2, 0);  // the same again
  EXPECT_EQ(wakes, 1);
}

TEST_F(FlowControlTest, NoWakeUpAfterTheWakeIsCleared) {
  flow.executor_state(2, 2, 0);
  flow.set_more_due(true);
  flow.set_wake(nullptr);  // the poller is going away
  flow.executor_state(2, 0, 0);
  EXPECT_EQ(wakes, 0);
}

TEST_F(FlowControlTest, MoreDueWakesWhenTheRoomGrewWhileTheLastClaimLookedShort) {
  flow.executor_state(20, 20, 0);
  flow.executor_state(20, 5, 0);  // slots freed during a claim that then comes back full
  EXPECT_EQ(wakes, 0);
  flow.set_more_due(true);
  EXPECT_EQ(wakes, 1);
  flow.set_more_due(true);  // already due: no second wake-up for the same room
  EXPECT_EQ(wakes, 1);
  flow.set_more_due(false);
  flow.executor_state(20, 20, 0);
  flow.set_more_due(true);  // no room: nothing to wake for
  EXPECT_EQ(wakes, 1);
}

TEST_F(FlowControlTest, ALargerConcurrencyIsRoomToo) {
  flow.executor_state(2, 2, 0);
  flow.set_more_due(true);
  flow.executor_state(40, 2, 0);  // SIGHUP raised scheduler.concurrency
  EXPECT_EQ(wakes, 1);
}

}  // namespace
}  // namespace agentcron
