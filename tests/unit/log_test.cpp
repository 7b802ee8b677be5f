// Logger: JSON escaping and the three output formats.
#include "agentcron/log.hpp"
#include "agentcron/secrets.hpp"

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>

#include <sstream>

namespace agentcron {
namespace {

std::string escaped(std::string_view s) {
  std::string out;
  append_json_escaped(out, s);
  return out;
}

TEST(JsonEscaping, QuotesBackslashesAndControls) {
  EXPECT_EQ(escaped("a\"b\\c"), "a\\\"b\\\\c");
  EXPECT_EQ(escaped("line\nnext\ttab\r"), "line\\nnext\\ttab\\r");
  EXPECT_EQ(escaped(std::string_view("\x01\x1f\x7f", 3)), "\\u0001\\u001f\\u007f");
  EXPECT_EQ(escaped(std::string_view("nul\0byte", 8)), "nul\\u0000byte");
}

TEST(JsonEscaping, KeepsValidUtf8AndReplacesInvalid) {
  EXPECT_EQ(escaped("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80"), "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80");
  EXPECT_EQ(escaped("bad\xFF"), "bad\xEF\xBF\xBD");
  EXPECT_EQ(escaped("trunc\xE2\x82"), "trunc\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(escaped("overlong\xC0\xAF"), "overlong\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(escaped("surrogate\xED\xA0\x80"), "surrogate\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST(JsonLine, HasTsLevelMsgAndFields) {
  auto ts = std::chrono::system_clock::time_point(std::chrono::milliseconds(1772899200123));  // 2026-03-07T16:00:00.123Z
  std::string line = render_json_line(ts, LogLevel::warn, "task \"x\" failed",
                                      {{"task_id", 42}, {"kind", "mail"}, {"ok", false}, {"ratio", 0.5}});
  EXPECT_EQ(line,
            "{\"ts\":\"2026-03-07T16:00:00.123Z\",\"level\":\"warn\",\"msg\":\"task \\\"x\\\" failed\","
            "\"task_id\":42,\"kind\":\"mail\",\"ok\":false,\"ratio\":0.5}");
}

TEST(TextMessage, QuotesValuesThatNeedIt) {
  EXPECT_EQ(render_text_message("claimed", {{"task_id", 7}, {"kind", "two words"}, {"empty", ""}}),
            "claimed task_id=7 kind=\"two words\" empty=\"\"");
}

TEST(Logger, JsonFormatWritesOneObjectPerLineAndFiltersLevels) {
  std::ostringstream out;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out);
  Logger log(LogFormat::json, LogLevel::info, sink);
  log.debug("hidden");
  log.info("shown", {{"task_id", 1}});
  log.error("multi\nline");
  std::string s = out.str();
  EXPECT_EQ(s.find("hidden"), std::string::npos);
  EXPECT_NE(s.find("\"msg\":\"shown\",\"task_id\":1}\n"), std::string::npos) << s;
  EXPECT_NE(s.find("\"msg\":\"multi\\nline\"}\n"), std::string::npos) << s;
  EXPECT_EQ(std::count(s.begin(), s.end(), '\n'), 2);
  log.set_level(LogLevel::debug);
  log.debug("now shown");
  EXPECT_NE(out.str().find("now shown"), std::string::npos);
}

TEST(Logger, JournalFormatCarriesSyslogPriority) {
  std::ostringstream out;
  Logger log(LogFormat::journal, LogLevel::info, std::make_shared<spdlog::sinks::ostream_sink_mt>(out));
  log.warn("careful", {{"task_id", 3}});
  log.error("broken");
  EXPECT_EQ(out.str(), "<4>careful task_id=3\n<3>broken\n");
}

// --log-format journal under systemd: native entries whose log fields are journal fields, seen
// through a recording writer in place of sd_journal_sendv.
TEST(Logger, JournalEntriesCarryPriorityMessageAndEachFieldAsAJournalField) {
  std::vector<std::vector<std::string>> entries;
  Logger log(LogLevel::info, [&](const std::vector<std::string>& fields) {
    entries.push_back(fields);
    return true;
  });
  log.warn("task failed", {{"task_id", 7}, {"kind", "nightly report"}, {"retry-in.ms", 1500}, {"done", false}});
  log.debug("not shown");
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0], (std::vector<std::string>{"MESSAGE=task failed task_id=7 kind=\"nightly report\" retry-in.ms=1500 done=false",
                                                  "PRIORITY=4", "SYSLOG_IDENTIFIER=agentcron", "TASK_ID=7",
                                                  "KIND=nightly report", "RETRY_IN_MS=1500", "DONE=false"}));
}

TEST(Logger, AnEntryTheJournalDidNotTakeGoesToStderrAsALine) {
  std::ostringstream out;
  Logger log(LogLevel::info, [](const std::vector<std::string>&) { return false; },
             std::make_shared<spdlog::sinks::ostream_sink_mt>(out));
  log.error("no journald here", {{"task_id", 9}});
  EXPECT_EQ(out.str(), "<3>no journald here task_id=9\n");
}

TEST(Logger, JournalFieldNamesAreWhatJournaldAccepts) {
  EXPECT_EQ(journal_field_name("task_id"), "TASK_ID");
  EXPECT_EQ(journal_field_name("_private"), "PRIVATE");
  EXPECT_EQ(journal_field_name("9lives"), "F_9LIVES");
  EXPECT_EQ(journal_field_name(""), "F_");
  EXPECT_EQ(journal_field_name(std::string(100, 'a')).size(), 64u);
}

TEST(LogFormat, AutoPicksJournalThenTerminalThenJson) {
  EXPECT_EQ(resolve_log_format("auto", true, true), LogFormat::journal);
  EXPECT_EQ(resolve_log_format("auto", true, false), LogFormat::text);
  EXPECT_EQ(resolve_log_format("auto", false, false), LogFormat::json);
  EXPECT_EQ(resolve_log_format("json", true, true), LogFormat::json);
  EXPECT_FALSE(resolve_log_format("xml", false, false));
}

}  // namespace
}  // namespace agentcron

namespace agentcron {
namespace {

TEST(Secrets, RememberedSecretsAreScrubbedFromEveryLineInEveryForm) {
  remember_secret("pw\"s/cr@t");
  remember_secret("postgres");  // a word: long enough to remember
  remember_secret("true");  // too short to scrub without mangling text (and JSON): not remembered
  EXPECT_EQ(scrub_secrets("auth failed for pw\"s/cr@t"), "auth failed for ***");
  EXPECT_EQ(scrub_secrets("url postgres://u:pw%22s%2Fcr%40t@h"), "url ***://u:***@h");
  EXPECT_EQ(scrub_secrets("true"), "true");
  std::ostringstream out;
  Logger json(LogFormat::json, LogLevel::info, std::make_shared<spdlog::sinks::ostream_sink_mt>(out));
  json.error("connect failed", {{"error", "password pw\"s/cr@t refused"}, {"ok", true}});
  EXPECT_EQ(out.str().find("cr@t"), std::string::npos) << out.str();
  // Scrubbed before rendering: the line is still JSON, the value still escaped.
  EXPECT_NE(out.str().find("\"error\":\"password *** refused\",\"ok\":true}"), std::string::npos) << out.str();
}

}  // namespace
}  // namespace agentcron
