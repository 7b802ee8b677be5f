// The environment of an exec handler's child (see handlers/exec.hpp): pure logic, apart from the
// process that runs the child, so that the configuration loader can check inherit_env with it.
#include <algorithm>

#include "agentcron/handlers/exec.hpp"

namespace agentcron {

namespace {

bool matches(const std::string& name, const std::string& pattern) {
  if (!pattern.empty() && pattern.back() == '*') return name.starts_with(std::string_view(pattern).substr(0, pattern.size() - 1));
  return name == pattern;
}

bool allowed_by_default(const std::string& name) {
  return name == "PATH" || name == "LANG" || name == "TZ" || name == "HOME" || name.starts_with("LC_");
}

}  // namespace

std::optional<std::string> names_database_credentials(const std::string& name) {
  // A pattern is refused when it could match a variable that holds the worker's secrets.
  for (const char* secret : {"DATABASE_URL", "DATABASE_URL_FILE", "AGENTCRON_DATABASE_URL", "PGPASSWORD",
                             "PGPASSFILE", "PGSERVICEFILE", "PGSSLKEY", "PGSSLPASSWORD"})
    if (matches(secret, name)) return std::string("would pass ") + secret + ", which holds the database's credentials";
  return std::nullopt;
}

std::optional<std::string> forbidden_inherit(const std::string& name) {
  if (auto why = names_database_credentials(name)) return why;
  if (name.starts_with("AGENTCRON_") || matches("AGENTCRON_", name))
    return "names the worker's own AGENTCRON_* settings; put what the program needs in env";
  if (name.empty() || name == "*") return "must name a variable or a prefix ending in *";
  return std::nullopt;
}

std::vector<std::string> child_environment(const Task& t, const std::map<std::string, std::string>& parent,
                                           const std::vector<std::string>& inherit,
                                           const std::vector<std::pair<std::string, std::string>>& extra) {
  std::map<std::string, std::string> env;
  for (const auto& [name, value] : parent) {
    const std::string& n = name;
    bool named = std::any_of(inherit.begin(), inherit.end(), [&n](const std::string& p) { return matches(n, p); });
    if ((allowed_by_default(name) || named) && !forbidden_inherit(name)) env[name] = value;
  }
  for (const auto& [k, v] : extra) env[k] = v;
  env["AGENTCRON_TASK_ID"] = std::to_string(t.id);
  env["AGENTCRON_KIND"] = t.kind;
  env["AGENTCRON_ATTEMPT"] = std::to_string(t.attempt);
  env["AGENTCRON_AGENT_ID"] = t.agent_id.value_or("");
  std::vector<std::string> out;
  for (auto& [k, v] : env) out.push_back(k + "=" + v);
  return out;
}


}  // namespace agentcron
