// Logger: the one way agentcron writes log lines — text on a terminal, JSON lines in containers,
// journald priority prefixes under systemd — each line with structured fields such as task_id.
#pragma once
#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <span>
#include <functional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace spdlog { class logger; }
namespace spdlog::sinks { class sink; }

namespace agentcron {

enum class LogLevel { trace, debug, info, warn, error, critical, off };
enum class LogFormat { text, json, journal };

std::optional<LogLevel> parse_log_level(std::string_view s);
std::string_view to_string(LogLevel l);
// "auto" picks journal when $JOURNAL_STREAM is set, text on a terminal, else json.
std::optional<LogFormat> resolve_log_format(std::string_view s, bool stderr_is_tty, bool journal_stream);

// One structured field of a log line. Holds views: build it in the logging call.
struct LogField {
  std::string_view key;
  std::variant<std::int64_t, double, bool, std::string_view> value;
  LogField(std::string_view k, std::string_view v) : key(k), value(v) {}
  LogField(std::string_view k, const std::string& v) : key(k), value(std::string_view(v)) {}
  LogField(std::string_view k, const char* v) : key(k), value(std::string_view(v)) {}
  LogField(std::string_view k, bool v) : key(k), value(v) {}
  LogField(std::string_view k, double v) : key(k), value(v) {}
  template <class I, class = std::enable_if_t<std::is_integral_v<I> && !std::is_same_v<I, bool>>>
  LogField(std::string_view k, I v) : key(k), value(static_cast<std::int64_t>(v)) {}
};
using LogFields = std::initializer_list<LogField>;

// One native journal entry: its fields as "NAME=value" (MESSAGE, PRIORITY, SYSLOG_IDENTIFIER and
// one per log field: TASK_ID=7, KIND=report, …). The process's writer is sd_journal_sendv
// (systemd_journal_writer() in systemd_notify.hpp); tests pass one that records. It returns false
// when the entry did not reach the journal: the line then goes to stderr, "<N>message".
using JournalWriter = std::function<bool(const std::vector<std::string>& fields)>;
// A log field's key as a journal field name: upper case, [A-Z0-9_], not starting with '_' or a
// digit ("task_id" → "TASK_ID", "retry-in.ms" → "RETRY_IN_MS").
std::string journal_field_name(std::string_view key);

// Appends `s` to `out` as the inside of a JSON string: quotes, backslashes and control characters
// escaped, invalid UTF-8 replaced by U+FFFD.
void append_json_escaped(std::string& out, std::string_view s);

// Renders one JSON log line (no trailing newline): {"ts":…,"level":…,"msg":…,fields…}.
std::string render_json_line(std::chrono::system_clock::time_point ts, LogLevel level,
                             std::string_view msg, std::span<const LogField> fields);
inline std::string render_json_line(std::chrono::system_clock::time_point ts, LogLevel level,
                                    std::string_view msg, LogFields fields) {
  return render_json_line(ts, level, msg, std::span<const LogField>(fields.begin(), fields.size()));
}
// Renders the text form of the message and fields: `msg key=value key="two words"`.
std::string render_text_message(std::string_view msg, std::span<const LogField> fields);
inline std::string render_text_message(std::string_view msg, LogFields fields) {
  return render_text_message(msg, std::span<const LogField>(fields.begin(), fields.size()));
}

class Logger {
 public:
  // Writes to stderr.
  Logger(LogFormat format, LogLevel level);
  // Writes to `sink` (tests pass an ostream sink). LogFormat::journal writes "<N>message" lines
  // there (journald's stream protocol).
  Logger(LogFormat format, LogLevel level, std::shared_ptr<spdlog::sinks::sink> sink);
  // LogFormat::journal as native entries with fields, through `journal`; what it cannot send goes
  // to `fallback` (stderr when null) as "<N>message" lines.
  Logger(LogLevel level, JournalWriter journal, std::shared_ptr<spdlog::sinks::sink> fallback = nullptr);
  ~Logger();
  Logger(const Logger&) = delete;
  Logger& operator=(const Logger&) = delete;

  void log(LogLevel level, std::string_view msg, LogFields fields = {});
  void trace(std::string_view msg, LogFields f = {}) { log(LogLevel::trace, msg, f); }
  void debug(std::string_view msg, LogFields f = {}) { log(LogLevel::debug, msg, f); }
  void info(std::string_view msg, LogFields f = {}) { log(LogLevel::info, msg, f); }
  void warn(std::string_view msg, LogFields f = {}) { log(LogLevel::warn, msg, f); }
  void error(std::string_view msg, LogFields f = {}) { log(LogLevel::error, msg, f); }

  bool enabled(LogLevel level) const;
  void set_level(LogLevel level);
  LogFormat format() const { return format_; }
  void flush();

 private:
  static bool mentions_secret(std::string_view msg, LogFields fields);
  void write(LogLevel level, std::string_view msg, std::span<const LogField> fields);
  void write_journal_entry(LogLevel level, std::string_view msg, std::span<const LogField> fields);
  LogFormat format_;
  std::shared_ptr<spdlog::logger> impl_;
  JournalWriter journal_;  // set: native journal entries instead of lines
};

}  // namespace agentcron
