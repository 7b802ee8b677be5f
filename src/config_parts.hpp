// What the configuration loader's parts share (private to src/config*.cpp): the one way a bad
// value is reported, the longest duration, and the handler tables' parser.
#pragma once
#include <toml++/toml.h>

#include <chrono>
#include <string>

#include "agentcron/config.hpp"

namespace agentcron::config_parts {

inline constexpr auto kMaxDuration = std::chrono::days(3650);

// Every configuration error: "<where>: <key> <what is wrong>".
[[noreturn]] inline void fail(const std::string& where, const std::string& key, const std::string& what) {
  throw ConfigError(where + ": " + key + " " + what);
}

// "file:line" of a node.
std::string where_in(const std::string& file, const toml::node& n);

// One [handlers.<kind>] table, every key checked.
HandlerConfig parse_handler(const std::string& file, const std::string& kind, const toml::table& t);

// One [schedules.<name>] table, every key checked (the cron expression and zone too).
ScheduleConfig parse_schedule(const std::string& file, const std::string& name, const toml::table& t);

}  // namespace agentcron::config_parts
