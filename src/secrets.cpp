// The process's secret registry (see secrets.hpp). Readers (every log line) take no lock: they
// load the current immutable list of forms; a writer publishes a new list and keeps the old ones
// alive (a reader may still hold one). The registry is never destroyed: a thread may log while
// static objects are being torn down.
#include "agentcron/secrets.hpp"

#include <algorithm>
#include <atomic>
#include <memory>
#include <mutex>
#include <vector>

#include "agentcron/database_url.hpp"
#include "agentcron/log.hpp"

namespace agentcron {
namespace {

using Forms = std::vector<std::string>;  // longest first: a longer form goes before its parts

struct Registry {
  std::mutex mu;                                // writers
  std::vector<std::unique_ptr<const Forms>> versions;
  std::atomic<const Forms*> current{nullptr};
};

Registry& registry() {
  static Registry* r = new Registry;
  return *r;
}

}  // namespace

void remember_secret(std::string_view secret) {
  if (secret.size() < kMinScrubbedSecret) return;
  std::string json;
  append_json_escaped(json, secret);
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  const Forms* now = r.current.load();
  auto next = std::make_unique<Forms>(now ? *now : Forms{});
  for (std::string form : {std::string(secret), json, percent_encode(secret)})
    if (std::find(next->begin(), next->end(), form) == next->end()) next->push_back(std::move(form));
  std::sort(next->begin(), next->end(), [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  r.current.store(next.get(), std::memory_order_release);
  r.versions.push_back(std::move(next));
}

bool secrets_remembered() { return registry().current.load(std::memory_order_acquire) != nullptr; }

bool holds_secret(std::string_view text) {
  const Forms* forms = registry().current.load(std::memory_order_acquire);
  if (!forms) return false;
  return std::any_of(forms->begin(), forms->end(), [&](const std::string& f) { return text.find(f) != std::string_view::npos; });
}

std::string scrub_secrets(std::string text) {
  const Forms* forms = registry().current.load(std::memory_order_acquire);
  if (!forms) return text;
  for (const auto& form : *forms)
    for (std::size_t pos = text.find(form); pos != std::string::npos; pos = text.find(form, pos + 3))
      text.replace(pos, form.size(), "***");
  return text;
}

}  // namespace agentcron
