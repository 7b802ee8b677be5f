// The [handlers.<kind>] tables of the configuration (see config.hpp): each type's keys, checked
// where they are read, with file and line in every error.
#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include "agentcron/cron.hpp"
#include "agentcron/database_url.hpp"
#include "agentcron/handlers/exec.hpp"
#include "config_parts.hpp"

namespace agentcron {

std::optional<HandlerType> parse_handler_type(std::string_view name) {
  if (name == "notify") return HandlerType::notify;
  if (name == "http") return HandlerType::http;
  if (name == "exec") return HandlerType::exec;
  return std::nullopt;
}

const char* to_string(HandlerType type) {
  switch (type) {
    case HandlerType::notify: return "notify";
    case HandlerType::http: return "http";
    case HandlerType::exec: return "exec";
  }
  return "?";
}

namespace config_parts {
namespace {

std::string expect_string(const std::string& file, const std::string& key, const toml::node& n) {
  if (!n.is_string()) fail(where_in(file, n), key, "must be a string");
  return n.as_string()->get();
}

Millis expect_duration(const std::string& file, const std::string& key, const toml::node& n) {
  std::string s = expect_string(file, key, n);
  std::string why;
  auto d = parse_duration(s, &why);
  if (!d || d->count() <= 0 || *d > kMaxDuration)
    fail(where_in(file, n), key, "must be a duration > 0 (and at most 3650d) such as \"30s\", got \"" + s + "\"");
  return *d;
}

std::vector<std::pair<std::string, std::string>> expect_string_table(const std::string& file, const std::string& key,
                                                                     const toml::node& n) {
  if (!n.is_table()) fail(where_in(file, n), key, "must be a table of strings");
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& [k, v] : *n.as_table())
    out.emplace_back(std::string(k.str()), expect_string(file, key + "." + std::string(k.str()), v));
  return out;
}

}  // namespace

std::string where_in(const std::string& file, const toml::node& n) {
  return file + ":" + std::to_string(n.source().begin.line);
}

namespace {

// The keys a handler of `type` takes.
std::vector<std::string> allowed_keys(HandlerType type) {
  switch (type) {
    case HandlerType::notify: return {"type", "channel", "concurrency"};
    case HandlerType::http:
      return {"type", "url", "method", "headers", "timeout", "tls_verify", "ca_file", "max_response_bytes", "concurrency"};
    case HandlerType::exec:
      return {"type", "command", "working_dir", "env", "inherit_env", "timeout", "kill_after", "concurrency"};
  }
  return {"type"};
}

void read_url(HandlerConfig& h, const std::string& file, const std::string& key, const toml::node& v) {
  h.url = expect_string(file, key, v);
  if (!h.url.starts_with("http://") && !h.url.starts_with("https://"))
    fail(where_in(file, v), key, "must start with http:// or https://, got \"" + redact_url(h.url) + "\"");
  std::string authority = h.url.substr(h.url.find("://") + 3);
  if (authority.substr(0, authority.find_first_of("/?#")).find('@') != std::string::npos)
    fail(where_in(file, v), key, "must not carry a user name or password (put credentials in headers), got \"" +
                                     redact_url(h.url) + "\"");
}

void read_ca_file(HandlerConfig& h, const std::string& file, const std::string& key, const toml::node& v) {
  h.ca_file = expect_string(file, key, v);
  std::ifstream pem(h.ca_file);
  std::string head(64 * 1024, '\0');
  pem.read(head.data(), static_cast<std::streamsize>(head.size()));
  head.resize(static_cast<std::size_t>(pem.gcount()));
  if (!pem.good() && !pem.eof()) fail(where_in(file, v), key, "cannot be read: \"" + h.ca_file + "\"");
  if (head.find("-----BEGIN CERTIFICATE-----") == std::string::npos)
    fail(where_in(file, v), key, "holds no PEM certificate (-----BEGIN CERTIFICATE-----): \"" + h.ca_file + "\"");
}

void read_inherit_env(HandlerConfig& h, const std::string& file, const std::string& key, const toml::node& v) {
  if (!v.is_array()) fail(where_in(file, v), key, "must be an array of variable names");
  for (const auto& item : *v.as_array()) {
    std::string var = expect_string(file, key, item);
    if (auto why = forbidden_inherit(var)) fail(where_in(file, item), key, "\"" + var + "\" " + *why);
    h.inherit_env.push_back(std::move(var));
  }
}

// One key of a handler table (already known to be one its type takes).
void read_key(HandlerConfig& h, const std::string& file, const std::string& name, const std::string& key,
              const toml::node& v) {
  auto bad = [&](const std::string& what) { fail(where_in(file, v), key, what); };
  if (name == "channel") {
    h.channel = expect_string(file, key, v);
    if (h.channel.empty() || h.channel.size() > 63) bad("must be 1 to 63 characters");
  } else if (name == "url") {
    read_url(h, file, key, v);
  } else if (name == "method") {
    h.method = expect_string(file, key, v);
    if (h.method != "POST" && h.method != "PUT" && h.method != "PATCH") bad("must be POST, PUT or PATCH, got \"" + h.method + "\"");
  } else if (name == "headers" || name == "env") {
    (name == "env" ? h.env : h.headers) = expect_string_table(file, key, v);
  } else if (name == "timeout" || name == "kill_after") {
    (name == "timeout" ? h.timeout : h.kill_after) = expect_duration(file, key, v);
  } else if (name == "tls_verify") {
    if (!v.is_boolean()) bad("must be true or false");
    h.tls_verify = v.as_boolean()->get();
  } else if (name == "ca_file") {
    read_ca_file(h, file, key, v);
  } else if (name == "max_response_bytes") {
    if (!v.is_integer() || v.as_integer()->get() < 1024 || v.as_integer()->get() > (std::int64_t{1} << 30))
      bad("must be a whole number of bytes from 1024 to 1073741824");
    h.max_response_bytes = v.as_integer()->get();
  } else if (name == "concurrency") {
    if (!v.is_integer() || v.as_integer()->get() < 1 || v.as_integer()->get() > 100000)
      bad("must be a whole number from 1 to 100000");
    h.concurrency = static_cast<int>(v.as_integer()->get());
  } else if (name == "inherit_env") {
    read_inherit_env(h, file, key, v);
  } else if (name == "working_dir") {
    h.working_dir = expect_string(file, key, v);
  } else if (name == "command") {
    if (!v.is_array()) bad("must be an array of strings (argv, no shell)");
    for (const auto& item : *v.as_array()) h.command.push_back(expect_string(file, key, item));
  }
}

}  // namespace

HandlerConfig parse_handler(const std::string& file, const std::string& kind, const toml::table& t) {
  HandlerConfig h;
  h.kind = kind;
  h.line = t.source().begin.line;
  const std::string prefix = "handlers." + kind;
  std::string table_where = file + ":" + std::to_string(h.line);
  if (kind.empty() || kind.size() > 200 || kind.find('\0') != std::string::npos)
    fail(table_where, prefix, "needs a kind name of 1 to 200 characters, without NUL");
  const toml::node* type = t.get("type");
  if (!type) fail(table_where, prefix + ".type", "is missing (notify, http or exec)");
  std::string type_name = expect_string(file, prefix + ".type", *type);
  auto parsed_type = parse_handler_type(type_name);
  if (!parsed_type) fail(where_in(file, *type), prefix + ".type", "must be notify, http or exec, got \"" + type_name + "\"");
  h.type = *parsed_type;
  std::vector<std::string> allowed = allowed_keys(h.type);
  for (const auto& [k, v] : t) {
    std::string name(k.str());
    std::string key = prefix + "." + name;
    if (std::find(allowed.begin(), allowed.end(), name) == allowed.end())
      fail(where_in(file, v), key, std::string("is not a key of a ") + to_string(h.type) + " handler");
    read_key(h, file, name, key, v);
  }
  if (h.type == HandlerType::http && h.url.empty()) fail(table_where, prefix + ".url", "is missing: an http handler needs a url");
  if (h.type == HandlerType::exec && (h.command.empty() || h.command.front().empty()))
    fail(table_where, prefix + ".command", "is missing or empty: an exec handler needs a command");
  return h;
}

namespace {
// Whether a string or key anywhere in `j` holds U+0000.
bool holds_nul(const nlohmann::json& j) {
  if (j.is_string()) return j.get_ref<const std::string&>().find('\0') != std::string::npos;
  if (j.is_object()) {
    for (const auto& [k, v] : j.items())
      if (k.find('\0') != std::string::npos || holds_nul(v)) return true;
  }
  if (j.is_array())
    for (const auto& v : j)
      if (holds_nul(v)) return true;
  return false;
}
}  // namespace

ScheduleConfig parse_schedule(const std::string& file, const std::string& name, const toml::table& t) {
  ScheduleConfig sc;
  sc.name = name;
  sc.line = t.source().begin.line;
  const std::string prefix = "schedules." + name;
  std::string table_where = file + ":" + std::to_string(sc.line);
  if (name.empty() || name.size() > 200 || name.find('\0') != std::string::npos)
    fail(table_where, prefix, "needs a name of 1 to 200 characters, without NUL");
  bool has_cron = false, has_kind = false;
  for (const auto& entry : t) {
    const toml::node& v = entry.second;
    std::string key_name(entry.first.str());
    std::string key = prefix + "." + key_name;
    auto bad = [&](const std::string& what) { fail(where_in(file, v), key, what); };
    auto whole = [&](std::int64_t lo, std::int64_t hi) {
      if (!v.is_integer() || v.as_integer()->get() < lo || v.as_integer()->get() > hi)
        bad("must be a whole number from " + std::to_string(lo) + " to " + std::to_string(hi));
      return static_cast<int>(v.as_integer()->get());
    };
    if (key_name == "cron") {
      sc.cron = expect_string(file, key, v);
      try {
        CronSchedule::parse(sc.cron);
      } catch (const CronError& e) {
        std::string why = e.what();
        if (why.starts_with("cron: ")) why.erase(0, 6);
        bad("is not a valid schedule: " + why);
      }
      has_cron = true;
    } else if (key_name == "timezone") {
      sc.timezone = expect_string(file, key, v);
      if (!TimeZone::find(sc.timezone)) bad("names an unknown time zone \"" + sc.timezone + "\"");
    } else if (key_name == "kind") {
      sc.kind = expect_string(file, key, v);
      if (sc.kind.empty() || sc.kind.size() > 200 || sc.kind.find('\0') != std::string::npos)
        bad("must be 1 to 200 characters, without NUL");
      has_kind = true;
    } else if (key_name == "payload") {
      // A TOML inline table ({ to = "ops" }) or a string of JSON: stored as a JSON object.
      nlohmann::json parsed;
      if (v.is_table()) {
        std::ostringstream out;
        out << toml::json_formatter{*v.as_table()};
        // Compact (toml++ writes inf and nan as the strings "Infinity" and "NaN").
        parsed = nlohmann::json::parse(out.str(), nullptr, false);
        if (parsed.is_discarded() || !parsed.is_object()) bad("cannot be written as a JSON object");
        sc.payload = parsed.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      } else {
        sc.payload = expect_string(file, key, v);
        parsed = nlohmann::json::parse(sc.payload, nullptr, false);
        if (parsed.is_discarded() || !parsed.is_object()) bad("must be a table or a string holding a JSON object");
      }
      // jsonb cannot store U+0000: the sync would fail at every try.
      if (holds_nul(parsed)) bad("must not hold a NUL character (\\u0000)");
    } else if (key_name == "priority") {
      sc.priority = whole(-32768, 32767);
    } else if (key_name == "max_attempts") {
      sc.max_attempts = whole(1, 1000000);
    } else if (key_name == "enabled") {
      if (!v.is_boolean()) bad("must be true or false");
      sc.enabled = v.as_boolean()->get();
    } else {
      bad("is not a key of a schedule (cron, timezone, kind, payload, priority, max_attempts, enabled)");
    }
  }
  if (!has_cron) fail(table_where, prefix + ".cron", "is missing: a schedule needs a cron expression");
  if (!has_kind) fail(table_where, prefix + ".kind", "is missing: a schedule needs the kind of task it adds");
  return sc;
}

}  // namespace config_parts
}  // namespace agentcron
