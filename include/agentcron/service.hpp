// The shape every service of the worker shares (see docs/architecture.md):
//
//   struct FooOptions { …fields with defaults…; void validate() const; };
//   class Foo {
//    public:
//     Foo(FooOptions, collaborators…, Logger&);  // validates its options
//     FooResult run_once(…);  // one round, on the caller's thread: what tests and metrics read
//     void start();           // runs rounds on a thread of its own
//     void request_stop();    // idempotent, safe before start()
//     void wait();
//   };
//
// A maintenance service (the rescuer, the janitor, the lease keeper) runs its rounds through a
// Periodic, its last member: destroyed first, it joins the thread before anything the rounds use
// goes away.
#pragma once
#include <stdexcept>
#include <string>

namespace agentcron {

// An option out of its range is a programming error (the configuration checks what users type):
// validate() throws this, naming the service and the option.
inline void require_option(bool ok, const char* service, const std::string& what) {
  if (!ok) throw std::invalid_argument(std::string(service) + ": " + what);
}

// For a constructor's initializer list: `options_(validated(std::move(options)))`.
template <class Options>
Options validated(Options options) {
  options.validate();
  return options;
}

}  // namespace agentcron
