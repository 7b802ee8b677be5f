// FlowControl: how much work this worker may take on, kept in one place. The executor reports
// its slots (capacity, handlers queued or running, outcomes being handed over), the completer
// the outcomes it has not written yet, the poller whether its last claim came back full ("more
// due"). The poller asks room() before each claim; the completer asks outcomes_coming() to know
// whether to wait for more before a write. When room grows while more is due, FlowControl wakes
// the poller itself: no service calls another to say a slot freed up.
//
// Lock order: FlowControl's lock is a leaf. It is taken by services holding their own locks,
// and while holding it FlowControl calls nothing but the wake-up, an eventfd write that takes
// no lock.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

namespace agentcron {

struct FlowState {
  int capacity = 0;              // the executor's slots
  int busy = 0;                  // handlers queued or running
  int delivering = 0;            // outcomes settled, being handed to the completer
  std::size_t unwritten = 0;     // outcomes the completer holds, not yet written
  bool more_due = false;         // the poller's last claim came back full
  int batch_size = 1;            // the poller's batch
  int free_slots() const { return capacity > busy ? capacity - busy : 0; }
  // How many tasks a claim may take: free slots less the outcomes not yet written, so that a
  // slow database stops the claiming instead of piling up outcomes in memory.
  int room() const { return free_slots() - static_cast<int>(unwritten); }
  // Handlers whose outcomes are still to come (not counting one being handed over).
  int outcomes_coming() const { return busy - delivering; }
  // Whether a claim is worth waking the poller for: half a batch fits, or every slot when there
  // are few.
  bool worth_a_claim() const;
};

class FlowControl {
 public:
  explicit FlowControl(int capacity = 0, int batch_size = 1);
  FlowControl(const FlowControl&) = delete;
  FlowControl& operator=(const FlowControl&) = delete;

  // Called (under FlowControl's lock) when room grows while more is due: wakes the poller. It
  // must take no lock and call nothing back (the poller's is an eventfd write). Once
  // set_wake(nullptr) returned, the old one is not running and is never called again.
  void set_wake(std::function<void()> wake);

  // The executor, under its lock, after every change of its counts.
  void executor_state(int capacity, int busy, int delivering);
  // The completer, under its lock, after every change of its queue.
  void unwritten(std::size_t n);
  // The poller, after each claim (and false after a failed one). Turning true wakes the poller
  // when the room is already worth a claim (it grew while more did not look due).
  void set_more_due(bool more);
  void set_batch_size(int n);
  // The poller, after each claim: the kinds whose concurrency limit held rows back (full before
  // the claim, or filled by it). When a slot of one of them frees (the executor's kind_freed),
  // more is due and the poller is woken — without it, a short claim of the other kinds would
  // leave the limited kind's backlog to the next tick.
  void set_held_back(std::vector<std::string> kinds);
  // The executor, under its lock, when a task of a limited kind ended: `room` of `limit` slots
  // of the kind are free now. Like room in general, it wakes the poller once half a batch of the
  // kind fits (or all it may have, when the limit is small), not at every task.
  void kind_freed(const std::string& kind, int room, int limit);
  // Grows at each such wake-up: a claim that saw it change while it ran leaves "more due" set.
  std::uint64_t freed_generation() const;

  FlowState state() const;
  int room() const { return state().room(); }
  bool more_due() const { return state().more_due; }
  int outcomes_coming() const { return state().outcomes_coming(); }

 private:
  // Updates the state under the lock; wakes the poller after, when room grew and a claim is due.
  template <class Change>
  void report(Change change);

  mutable std::mutex mu_;
  FlowState s_;
  std::vector<std::string> held_back_;
  std::uint64_t freed_generation_ = 0;
  std::function<void()> wake_;
};

}  // namespace agentcron
