// FnHandler: a handler made of a lambda, for tests that need handlers which succeed, throw, hang
// or record what they ran.
#pragma once
#include <functional>
#include <utility>

#include "agentcron/handlers/handler.hpp"

namespace agentcron::testing {

class FnHandler final : public Handler {
 public:
  using Fn = std::function<TaskOutcome(const Task&, const HandlerContext&)>;
  explicit FnHandler(Fn f) : f_(std::move(f)) {}
  TaskOutcome run(const Task& t, const HandlerContext& c) override { return f_(t, c); }

 private:
  Fn f_;
};

}  // namespace agentcron::testing
