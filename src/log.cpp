// Logger over spdlog (see log.hpp). spdlog does the locking, level filtering and sinks; this
// file renders the line, so that JSON and journald output carry structured fields.
#include "agentcron/log.hpp"

#include <fmt/chrono.h>
#include <fmt/format.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <vector>

#include "agentcron/secrets.hpp"

namespace agentcron {
namespace {

spdlog::level::level_enum to_spd(LogLevel l) {
  switch (l) {
    case LogLevel::trace: return spdlog::level::trace;
    case LogLevel::debug: return spdlog::level::debug;
    case LogLevel::info: return spdlog::level::info;
    case LogLevel::warn: return spdlog::level::warn;
    case LogLevel::error: return spdlog::level::err;
    case LogLevel::critical: return spdlog::level::critical;
    case LogLevel::off: return spdlog::level::off;
  }
  return spdlog::level::info;
}

// sd-daemon.h's <N> prefixes, which journald turns into the line's priority.
int journal_priority(LogLevel l) {
  switch (l) {
    case LogLevel::trace:
    case LogLevel::debug: return 7;
    case LogLevel::info: return 6;
    case LogLevel::warn: return 4;
    case LogLevel::error: return 3;
    default: return 2;
  }
}

void append_value(std::string& out, const LogField& f, bool json) {
  std::visit(
      [&](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::string_view>) {
          bool quote = json || v.empty() || v.find_first_of(" \t\"=\n") != std::string_view::npos;
          if (quote) out += '"';
          if (json || quote) append_json_escaped(out, v);
          else out += v;
          if (quote) out += '"';
        } else if constexpr (std::is_same_v<T, bool>) {
          out += v ? "true" : "false";
        } else {
          out += fmt::format("{}", v);
        }
      },
      f.value);
}

}  // namespace

std::optional<LogLevel> parse_log_level(std::string_view s) {
  if (s == "trace") return LogLevel::trace;
  if (s == "debug") return LogLevel::debug;
  if (s == "info") return LogLevel::info;
  if (s == "warn" || s == "warning") return LogLevel::warn;
  if (s == "error") return LogLevel::error;
  if (s == "critical") return LogLevel::critical;
  if (s == "off") return LogLevel::off;
  return std::nullopt;
}

std::string_view to_string(LogLevel l) {
  static constexpr std::string_view names[] = {"trace", "debug", "info", "warn", "error", "critical", "off"};
  return names[static_cast<int>(l)];
}

std::optional<LogFormat> resolve_log_format(std::string_view s, bool stderr_is_tty, bool journal_stream) {
  if (s == "text") return LogFormat::text;
  if (s == "json") return LogFormat::json;
  if (s == "journal") return LogFormat::journal;
  if (s == "auto") {
    if (journal_stream) return LogFormat::journal;
    return stderr_is_tty ? LogFormat::text : LogFormat::json;
  }
  return std::nullopt;
}

void append_json_escaped(std::string& out, std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  std::size_t n = s.size();
  for (std::size_t i = 0; i < n;) {
    unsigned char c = p[i];
    if (c < 0x80) {
      switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        case '\b': out += "\\b"; break;
        case '\f': out += "\\f"; break;
        default:
          if (c < 0x20 || c == 0x7f) out += fmt::format("\\u{:04x}", c);
          else out += static_cast<char>(c);
      }
      ++i;
      continue;
    }
    // A multi-byte UTF-8 sequence: copy it when well-formed, else one U+FFFD per bad byte.
    std::size_t len = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
    bool ok = len > 0 && i + len <= n;
    for (std::size_t k = 1; ok && k < len; ++k) ok = (p[i + k] & 0xC0) == 0x80;
    if (ok) {
      std::uint32_t cp = c & (0xFF >> (len + 1));
      for (std::size_t k = 1; k < len; ++k) cp = (cp << 6) | (p[i + k] & 0x3F);
      const std::uint32_t min_for_len[] = {0, 0, 0x80, 0x800, 0x10000};
      ok = cp >= min_for_len[len] && cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF);
    }
    if (ok) {
      out.append(s.substr(i, len));
      i += len;
    } else {
      out += "\xEF\xBF\xBD";
      ++i;
    }
  }
}

std::string render_json_line(std::chrono::system_clock::time_point ts, LogLevel level,
                             std::string_view msg, std::span<const LogField> fields) {
  std::string out;
  out.reserve(96 + msg.size());
  auto secs = std::chrono::time_point_cast<std::chrono::seconds>(ts);
  auto millis = std::chrono::duration_cast<std::chrono::milliseconds>(ts - secs).count();
  out += fmt::format("{{\"ts\":\"{:%Y-%m-%dT%H:%M:%S}.{:03d}Z\",\"level\":\"{}\",\"msg\":\"", secs, millis,
                     to_string(level));
  append_json_escaped(out, msg);
  out += '"';
  for (const auto& f : fields) {
    out += ",\"";
    append_json_escaped(out, f.key);
    out += "\":";
    append_value(out, f, true);
  }
  out += '}';
  return out;
}

std::string render_text_message(std::string_view msg, std::span<const LogField> fields) {
  std::string out(msg);
  for (const auto& f : fields) {
    out += ' ';
    out += f.key;
    out += '=';
    append_value(out, f, false);
  }
  return out;
}

Logger::Logger(LogFormat format, LogLevel level)
    : Logger(format, level, std::make_shared<spdlog::sinks::stderr_sink_mt>()) {}

Logger::Logger(LogFormat format, LogLevel level, std::shared_ptr<spdlog::sinks::sink> sink)
    : format_(format), impl_(std::make_shared<spdlog::logger>("agentcron", std::move(sink))) {
  impl_->set_pattern(format == LogFormat::text ? "%Y-%m-%dT%H:%M:%S.%e %^%-5l%$ %v" : "%v");
  impl_->set_level(to_spd(level));
  impl_->flush_on(spdlog::level::trace);
}

Logger::Logger(LogLevel level, JournalWriter journal, std::shared_ptr<spdlog::sinks::sink> fallback)
    : Logger(LogFormat::journal, level, fallback ? std::move(fallback) : std::make_shared<spdlog::sinks::stderr_sink_mt>()) {
  journal_ = std::move(journal);
}

Logger::~Logger() = default;

std::string journal_field_name(std::string_view key) {
  std::string out;
  for (char c : key) {
    if (c >= 'a' && c <= 'z') out += static_cast<char>(c - 'a' + 'A');
    else if ((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) out += c;
    else out += '_';
  }
  while (!out.empty() && out.front() == '_') out.erase(out.begin());
  if (out.empty() || (out.front() >= '0' && out.front() <= '9')) out = "F_" + out;
  return out.substr(0, 64);
}

bool Logger::enabled(LogLevel level) const { return impl_->should_log(to_spd(level)); }

void Logger::set_level(LogLevel level) { impl_->set_level(to_spd(level)); }

void Logger::flush() { impl_->flush(); }

void Logger::log(LogLevel level, std::string_view msg, LogFields fields) {
  auto lvl = to_spd(level);
  if (!impl_->should_log(lvl)) return;
  if (secrets_remembered() && mentions_secret(msg, fields)) {
    // Scrubbed copies of the message and text values, rendered as usual (scrubbing the rendered
    // line could break its JSON).
    std::string scrubbed_msg = scrub_secrets(std::string(msg));
    std::vector<std::string> texts;
    texts.reserve(fields.size());  // the views below point into it: no reallocation
    std::vector<LogField> scrubbed;
    for (const auto& f : fields) {
      if (const auto* v = std::get_if<std::string_view>(&f.value)) {
        texts.push_back(scrub_secrets(std::string(*v)));
        scrubbed.emplace_back(f.key, std::string_view(texts.back()));
      } else {
        scrubbed.push_back(f);
      }
    }
    write(level, scrubbed_msg, scrubbed);
    return;
  }
  write(level, msg, std::span<const LogField>(fields.begin(), fields.size()));
}

bool Logger::mentions_secret(std::string_view msg, LogFields fields) {
  if (holds_secret(msg)) return true;
  for (const auto& f : fields)
    if (const auto* v = std::get_if<std::string_view>(&f.value); v && holds_secret(*v)) return true;
  return false;
}

// MESSAGE is the text line (what `journalctl` shows); each field is also a field of its own, its
// value as the text format has it but unquoted (journalctl -o verbose, `journalctl TASK_ID=7`).
void Logger::write_journal_entry(LogLevel level, std::string_view msg, std::span<const LogField> fields) {
  std::vector<std::string> entry;
  entry.reserve(fields.size() + 3);
  entry.push_back("MESSAGE=" + render_text_message(msg, fields));
  entry.push_back("PRIORITY=" + std::to_string(journal_priority(level)));
  entry.push_back("SYSLOG_IDENTIFIER=agentcron");
  for (const auto& f : fields) {
    std::string value;
    if (const auto* v = std::get_if<std::string_view>(&f.value)) value = *v;
    else append_value(value, f, false);
    entry.push_back(journal_field_name(f.key) + "=" + value);
  }
  // No journald to take it (a container, a redirected stderr): the line is not lost.
  if (!journal_(entry)) impl_->log(to_spd(level), "<{}>{}", journal_priority(level), entry[0].substr(8));
}

void Logger::write(LogLevel level, std::string_view msg, std::span<const LogField> fields) {
  auto lvl = to_spd(level);
  switch (format_) {
    case LogFormat::json:
      impl_->log(lvl, "{}", render_json_line(std::chrono::system_clock::now(), level, msg, fields));
      break;
    case LogFormat::journal:
      if (journal_) {
        write_journal_entry(level, msg, fields);
        break;
      }
      impl_->log(lvl, "<{}>{}", journal_priority(level), render_text_message(msg, fields));
      break;
    case LogFormat::text:
      impl_->log(lvl, "{}", render_text_message(msg, fields));
      break;
  }
}

}  // namespace agentcron
