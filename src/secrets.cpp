// The process's secret registry (see secrets.hpp).
#include "agentcron/secrets.hpp"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <mutex>
#include <vector>

#include "agentcron/log.hpp"

namespace agentcron {
namespace {

std::mutex mu;
std::vector<std::string> forms;  // longest first, so a longer form is replaced before its parts
std::atomic<bool> any{false};

std::string percent_encoded(std::string_view s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

}  // namespace

void remember_secret(std::string_view secret) {
  if (secret.size() < 4) return;
  std::string json;
  append_json_escaped(json, secret);
  std::lock_guard lock(mu);
  for (std::string form : {std::string(secret), json, percent_encoded(secret)})
    if (std::find(forms.begin(), forms.end(), form) == forms.end()) forms.push_back(std::move(form));
  std::sort(forms.begin(), forms.end(), [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  any = true;
}

bool secrets_remembered() { return any.load(std::memory_order_relaxed); }

std::string scrub_secrets(std::string text) {
  if (!secrets_remembered()) return text;
  std::lock_guard lock(mu);
  for (const auto& form : forms) {
    for (std::size_t pos = text.find(form); pos != std::string::npos; pos = text.find(form, pos + 3))
      text.replace(pos, form.size(), "***");
  }
  return text;
}

}  // namespace agentcron
