// The handler registry and the notify handler (see handlers/handler.hpp).
#include "agentcron/handlers/handler.hpp"

#include "agentcron/config.hpp"
#include "agentcron/handlers/exec.hpp"
#include "agentcron/handlers/http.hpp"
#include "agentcron/log.hpp"

namespace agentcron {

TaskOutcome NotifyHandler::run(const Task&, const HandlerContext&) { return TaskOutcome::success(); }

void append_task_identity(std::string& out, const Task& task) {
  out += "\"task_id\":" + std::to_string(task.id) + ",\"agent_id\":";
  if (task.agent_id) {
    out += '"';
    append_json_escaped(out, *task.agent_id);
    out += '"';
  } else {
    out += "null";
  }
  out += ",\"kind\":\"";
  append_json_escaped(out, task.kind);
  out += '"';
}

std::optional<std::pair<std::string, std::string>> NotifyHandler::completion_notify(const Task& task) const {
  std::string payload = "{";
  append_task_identity(payload, task);
  payload += "}";
  return std::make_pair(channel_, payload);
}

void HandlerRegistry::add(std::string kind, std::shared_ptr<Handler> handler) {
  handlers_[std::move(kind)] = std::move(handler);
}

Handler* HandlerRegistry::find(const std::string& kind) const {
  auto it = handlers_.find(kind);
  return it == handlers_.end() ? nullptr : it->second.get();
}

std::vector<std::string> HandlerRegistry::kinds() const {
  std::vector<std::string> out;
  for (const auto& [k, _] : handlers_) out.push_back(k);
  return out;
}

namespace {

std::shared_ptr<Handler> http_handler(const Config& config, const HandlerConfig& h) {
  HttpOptions o{h.url, h.method, {}, h.timeout, h.tls_verify};
  o.ca_file = h.ca_file;
  o.max_response_bytes = static_cast<std::size_t>(h.max_response_bytes);
  for (const auto& [name, value] : h.headers) {
    try {
      o.headers.emplace_back(name, expand_env(value));
    } catch (const std::runtime_error& e) {
      // The message names the variable, never a value.
      throw ConfigError(config.file + ":" + std::to_string(h.line) + ": handlers." + h.kind + ".headers." + name +
                        ": " + e.what());
    }
  }
  return std::make_shared<HttpHandler>(std::move(o));
}

}  // namespace

HandlerRegistry HandlerRegistry::from_config(const Config& config, Logger& log) {
  HandlerRegistry r;
  for (const auto& h : config.handlers) {
    switch (h.type) {
      case HandlerType::notify: r.add(h.kind, std::make_shared<NotifyHandler>(h.channel)); break;
      case HandlerType::http: r.add(h.kind, http_handler(config, h)); break;
      case HandlerType::exec: {
        ExecOptions o{h.command, h.working_dir, h.env, h.timeout, h.kill_after};
        o.inherit_env = h.inherit_env;
        r.add(h.kind, std::make_shared<ExecHandler>(std::move(o), log));
        break;
      }
    }
  }
  return r;
}

}  // namespace agentcron
