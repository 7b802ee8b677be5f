#include "agentcron/flow_control.hpp"

#include <algorithm>

namespace agentcron {

bool FlowState::worth_a_claim() const {
  int free = room();
  return more_due && free >= std::max(1, std::min(batch_size, free + busy) / 2);
}

FlowControl::FlowControl(int capacity, int batch_size) {
  s_.capacity = capacity;
  s_.batch_size = std::max(1, batch_size);
}

void FlowControl::set_wake(std::function<void()> wake) {
  std::lock_guard lock(mu_);
  wake_ = std::move(wake);
}

template <class Change>
void FlowControl::report(Change change) {
  std::lock_guard lock(mu_);
  int before = s_.room();
  change(s_);
  // Under the lock, so that set_wake(nullptr) returns only once no wake-up is under way: the
  // poller clears it before it goes away. A wake-up takes no lock.
  if (wake_ && s_.room() > before && s_.worth_a_claim()) wake_();
}

void FlowControl::executor_state(int capacity, int busy, int delivering) {
  report([&](FlowState& s) {
    s.capacity = capacity;
    s.busy = busy;
    s.delivering = delivering;
  });
}

void FlowControl::unwritten(std::size_t n) {
  report([&](FlowState& s) { s.unwritten = n; });
}

void FlowControl::set_more_due(bool more) {
  std::lock_guard lock(mu_);
  bool was = s_.more_due;
  s_.more_due = more;
  // Room that grew while the last claim looked short is worth a claim now that more is due.
  if (wake_ && more && !was && s_.worth_a_claim()) wake_();
}

void FlowControl::set_batch_size(int n) {
  std::lock_guard lock(mu_);
  s_.batch_size = std::max(1, n);
}

void FlowControl::set_held_back(std::vector<std::string> kinds) {
  std::lock_guard lock(mu_);
  held_back_ = std::move(kinds);
}

void FlowControl::kind_freed(const std::string& kind, int room, int limit) {
  std::lock_guard lock(mu_);
  if (std::find(held_back_.begin(), held_back_.end(), kind) == held_back_.end()) return;
  if (room < std::max(1, std::min(limit, s_.batch_size) / 2)) return;
  ++freed_generation_;
  s_.more_due = true;
  if (wake_) wake_();
}

std::uint64_t FlowControl::freed_generation() const {
  std::lock_guard lock(mu_);
  return freed_generation_;
}

FlowState FlowControl::state() const {
  std::lock_guard lock(mu_);
  return s_;
}

}  // namespace agentcron
