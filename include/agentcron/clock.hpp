// Clock: the source of monotonic time for services, so tests can drive time with a FakeClock.
#pragma once
#include <chrono>

namespace agentcron {

class Clock {
 public:
  using time_point = std::chrono::steady_clock::time_point;
  virtual ~Clock() = default;
  virtual time_point now() const = 0;
};

class SteadyClock final : public Clock {
 public:
  time_point now() const override { return std::chrono::steady_clock::now(); }
};

}  // namespace agentcron
