// agentcron with a C++ no-op handler for kind "noop" — what the benchmark runs, so that agentcron
// is measured doing what its peers do (nothing) rather than a pg_notify per task. With
// AGENTCRON_BENCH_TRACE=1 each run prints "TRACE <task id> <unix µs>" when it starts (pickup latency).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>

#include "agentcron/cli.hpp"
#include "agentcron/handlers/handler.hpp"

namespace {

class Noop final : public agentcron::Handler {
 public:
  explicit Noop(bool trace) : trace_(trace) {}
  agentcron::TaskOutcome run(const agentcron::Task& task, const agentcron::HandlerContext&) override {
    if (trace_) {
      auto us = std::chrono::duration_cast<std::chrono::microseconds>(
                    std::chrono::system_clock::now().time_since_epoch()).count();
      std::printf("TRACE %lld %lld\n", static_cast<long long>(task.id), static_cast<long long>(us));
      std::fflush(stdout);
    }
    return agentcron::TaskOutcome::success();
  }

 private:
  bool trace_;
};

}  // namespace

int main(int argc, char** argv) {
  bool trace = std::getenv("AGENTCRON_BENCH_TRACE") != nullptr;
  return agentcron::run_cli(argc, argv, [trace](agentcron::HandlerRegistry& r) {
    r.add("noop", std::make_shared<Noop>(trace));
  });
}
