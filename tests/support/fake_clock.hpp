// FakeClock: a Clock whose time only moves when the test says so.
#pragma once
#include "agentcron/clock.hpp"

namespace agentcron::testing {

class FakeClock final : public Clock {
 public:
  time_point now() const override { return t; }
  time_point t{};
};

}  // namespace agentcron::testing
