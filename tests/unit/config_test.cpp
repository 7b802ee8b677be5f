// Configuration: precedence, validation errors with file and line, Prisma URL parameters,
// redaction, and that the docs and the example file cover every key.
#include "agentcron/config.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

namespace agentcron {
namespace {

class ConfigTest : public ::testing::Test {
 protected:
  std::string write(const std::string& text) {
    path_ = "/tmp/agentcron-config-test-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name() + ".toml";
    std::ofstream(path_) << text;
    return path_;
  }
  void TearDown() override {
    if (!path_.empty()) ::unlink(path_.c_str());
  }
  ConfigSources sources(const std::string& text) {
    ConfigSources s;
    s.file = write(text);
    s.default_file = "/nonexistent";
    return s;
  }
  std::string error_of(ConfigSources s) {
    try {
      load_config(s);
    } catch (const ConfigError& e) {
      return e.what();
    }
    return "(no error)";
  }
  std::string path_;
};

TEST_F(ConfigTest, DefaultsWithoutAnySource) {
  ConfigSources s;
  s.default_file = "/nonexistent";
  Config c = load_config(s);
  EXPECT_EQ(c.database.connection_limit, 4);
  EXPECT_EQ(c.database.pool_timeout, std::chrono::seconds(10));
  EXPECT_EQ(c.timeouts.claim, std::chrono::seconds(15));
  EXPECT_EQ(c.scheduler.schedule, "*/5 * * * * *");
  EXPECT_EQ(c.scheduler.batch_size, 50);
  EXPECT_EQ(c.scheduler.lease, std::chrono::seconds(60));
  EXPECT_EQ(c.retention.failed, std::chrono::hours(24 * 30));
  EXPECT_EQ(c.metrics.listen, "127.0.0.1:9464");
  EXPECT_EQ(c.origins.at("scheduler.batch_size"), "default");
}

TEST_F(ConfigTest, FileThenEnvironmentThenCommandLine) {
  ConfigSources s = sources(
      "[scheduler]\nbatch_size = 10\nconcurrency = 3\nlease = \"30s\"\n[database]\nconnection_limit = 7\n");
  s.env["AGENTCRON_SCHEDULER_BATCH_SIZE"] = "20";
  s.env["AGENTCRON_SCHEDULER_CONCURRENCY"] = "5";
  s.cli.emplace_back("scheduler.batch_size", "30", "--set scheduler.batch_size");
  Config c = load_config(s);
  EXPECT_EQ(c.scheduler.batch_size, 30);        // command line wins
  EXPECT_EQ(c.scheduler.concurrency, 5);        // environment beats file
  EXPECT_EQ(c.scheduler.lease, std::chrono::seconds(30));  // file beats default
  EXPECT_EQ(c.database.connection_limit, 7);
  EXPECT_EQ(c.origins.at("scheduler.batch_size"), "command line --set scheduler.batch_size");
  EXPECT_EQ(c.origins.at("scheduler.concurrency"), "environment AGENTCRON_SCHEDULER_CONCURRENCY");
  EXPECT_EQ(c.origins.at("scheduler.lease"), path_ + ":4");
}

TEST_F(ConfigTest, DefaultFileIsReadWhenPresent) {
  ConfigSources s;
  s.default_file = write("[scheduler]\nbatch_size = 11\n");
  EXPECT_EQ(load_config(s).scheduler.batch_size, 11);
  EXPECT_EQ(load_config(s).file, path_);
}

TEST_F(ConfigTest, DatabaseUrlPrismaParametersAreHonoured) {
  ConfigSources s;
  s.default_file = "/nonexistent";
  s.env["DATABASE_URL"] =
      "postgresql://u:p%40ss@db.example:6543/postgres?pgbouncer=true&connection_limit=1&pool_timeout=20&sslmode=require";
  Config c = load_config(s);
  EXPECT_EQ(c.database.connection_limit, 1);
  EXPECT_EQ(c.database.pool_timeout, std::chrono::seconds(20));
  EXPECT_TRUE(c.database.pgbouncer);
  EXPECT_EQ(c.origins.at("database.connection_limit"), "environment DATABASE_URL (url parameter)");
  std::string shown = describe_config(c);
  EXPECT_EQ(shown.find("p@ss"), std::string::npos) << shown;
  EXPECT_EQ(shown.find("p%40ss"), std::string::npos) << shown;
  EXPECT_NE(shown.find("connection_limit = 1"), std::string::npos) << shown;
  EXPECT_NE(shown.find("pool_timeout = \"20s\""), std::string::npos) << shown;
  EXPECT_NE(shown.find("pgbouncer = true"), std::string::npos) << shown;
  EXPECT_NE(shown.find("sslmode=require"), std::string::npos) << shown;
}

TEST_F(ConfigTest, ExplicitKeyBeatsUrlParameterOfTheSameLevel) {
  ConfigSources s = sources("[database]\nurl = \"postgres://h/db?connection_limit=2&statement_timeout=5000\"\nconnection_limit = 9\n");
  Config c = load_config(s);
  EXPECT_EQ(c.database.connection_limit, 9);
  EXPECT_EQ(c.timeouts.claim, std::chrono::seconds(5));
  EXPECT_EQ(c.timeouts.update, std::chrono::seconds(5));
  // A later level's URL parameter beats an earlier level's key.
  s.env["DATABASE_URL"] = "postgres://h/db?connection_limit=3";
  EXPECT_EQ(load_config(s).database.connection_limit, 3);
}

TEST_F(ConfigTest, HandlersAreParsed) {
  Config c = load_config(sources(
      "[handlers.mark_ready]\ntype = \"notify\"\nchannel = \"ready\"\n"
      "[handlers.call_agent]\ntype = \"http\"\nurl = \"http://127.0.0.1:8080/run?key=k3y\"\ntimeout = \"10s\"\n"
      "headers = { Authorization = \"Bearer ${AGENT_TOKEN}\" }\nmax_response_bytes = 4096\nca_file = \"/etc/ssl/certs/ca-certificates.crt\"\n"
      "[handlers.script]\ntype = \"exec\"\ncommand = [\"/usr/bin/python3\", \"job.py\"]\nkill_after = \"2s\"\n"
      "inherit_env = [\"AWS_REGION\", \"OTEL_*\"]\n"));
  ASSERT_EQ(c.handlers.size(), 3u);
  auto h = [&](const std::string& kind) {
    for (const auto& x : c.handlers)
      if (x.kind == kind) return x;
    throw std::runtime_error("no handler " + kind);
  };
  EXPECT_EQ(h("mark_ready").channel, "ready");
  EXPECT_EQ(h("mark_ready").line, 1);
  EXPECT_EQ(h("call_agent").url, "http://127.0.0.1:8080/run?key=k3y");
  EXPECT_EQ(h("call_agent").max_response_bytes, 4096);
  EXPECT_EQ(h("call_agent").ca_file, "/etc/ssl/certs/ca-certificates.crt");
  EXPECT_EQ(h("script").inherit_env, (std::vector<std::string>{"AWS_REGION", "OTEL_*"}));
  EXPECT_NE(describe_config(c).find("call_agent = http (POST http://127.0.0.1:8080/run?***)"), std::string::npos)
      << describe_config(c);
  EXPECT_EQ(describe_config(c).find("k3y"), std::string::npos);
  EXPECT_EQ(h("call_agent").timeout, std::chrono::seconds(10));
  EXPECT_EQ(h("call_agent").headers.at(0).second, "Bearer ${AGENT_TOKEN}");
  EXPECT_EQ(h("script").command.size(), 2u);
  EXPECT_EQ(h("script").kill_after, std::chrono::seconds(2));
  EXPECT_NE(describe_config(c).find("# claims kinds: call_agent, mark_ready, script"), std::string::npos)
      << describe_config(c);
}

struct Bad {
  const char* toml;
  const char* expect;  // substring after "<file>:"
};

TEST_F(ConfigTest, SchedulesAndKindConcurrencyAreParsed) {
  auto s = sources(
      "[handlers.report]\ntype = \"notify\"\nconcurrency = 2\n"
      "[schedules.nightly]\ncron = \"30 2 * * *\"\ntimezone = \"Europe/Berlin\"\nkind = \"report\"\n"
      "payload = { to = \"ops\", n = 3 }\npriority = 5\nmax_attempts = 2\n"
      "[schedules.hourly]\ncron = \"@hourly\"\nkind = \"report\"\npayload = '{\"a\": [1]}'\nenabled = false\n");
  Config c = load_config(s);
  ASSERT_EQ(c.handlers.size(), 1u);
  EXPECT_EQ(c.handlers[0].concurrency, 2);
  ASSERT_EQ(c.schedules.size(), 2u);
  const ScheduleConfig* nightly = c.schedules[0].name == "nightly" ? &c.schedules[0] : &c.schedules[1];
  const ScheduleConfig* hourly = nightly == &c.schedules[0] ? &c.schedules[1] : &c.schedules[0];
  EXPECT_EQ(nightly->cron, "30 2 * * *");
  EXPECT_EQ(nightly->timezone, "Europe/Berlin");
  EXPECT_EQ(nightly->kind, "report");
  EXPECT_EQ(nightly->payload, "{\"n\":3,\"to\":\"ops\"}");
  EXPECT_EQ(nightly->priority, 5);
  EXPECT_EQ(nightly->max_attempts, 2);
  EXPECT_TRUE(nightly->enabled);
  EXPECT_EQ(hourly->payload, "{\"a\": [1]}");
  EXPECT_TRUE(c.schedules_declared);
  EXPECT_FALSE(load_config(sources("[handlers.report]\ntype = \"notify\"\n")).schedules_declared);
  EXPECT_TRUE(load_config(sources("[schedules]\n")).schedules_declared);
  EXPECT_FALSE(hourly->enabled);
  EXPECT_NE(describe_config(c).find("nightly = \"30 2 * * *\" Europe/Berlin -> report"), std::string::npos);
}

TEST_F(ConfigTest, BadSchedulesNameTheKeyFileAndLine) {
  // The error with the file's path as "F".
  auto err = [&](const std::string& text) {
    std::string e = error_of(sources(text));
    if (auto at = e.find(path_); at != std::string::npos) e.replace(at, path_.size(), "F");
    return e;
  };
  EXPECT_EQ(err("[schedules.a]\nkind = \"k\"\n"), "F:1: schedules.a.cron is missing: a schedule needs a cron expression");
  EXPECT_EQ(err("[schedules.a]\ncron = \"@daily\"\n"), "F:1: schedules.a.kind is missing: a schedule needs the kind of task it adds");
  EXPECT_EQ(err("[schedules.a]\nkind = \"k\"\ncron = \"0 25 * * *\"\n"),
            "F:3: schedules.a.cron is not a valid schedule: field 2 (hour): 25 is out of range 0-23 in \"0 25 * * *\"");
  EXPECT_EQ(err("[schedules.a]\nkind = \"k\"\ncron = \"@daily\"\ntimezone = \"Mars/Base\"\n"),
            "F:4: schedules.a.timezone names an unknown time zone \"Mars/Base\"");
  EXPECT_EQ(err("[schedules.a]\nkind = \"k\"\ncron = \"@daily\"\npayload = \"[1]\"\n"),
            "F:4: schedules.a.payload must be a table or a string holding a JSON object");
  EXPECT_EQ(err("[schedules.a]\nkind = \"k\"\ncron = \"@daily\"\nevery = 3\n"),
            "F:4: schedules.a.every is not a key of a schedule (cron, timezone, kind, payload, priority, max_attempts, enabled)");
  EXPECT_EQ(err("[schedules.a]\nkind = \"k\"\ncron = \"@daily\"\npriority = 40000\n"),
            "F:4: schedules.a.priority must be a whole number from -32768 to 32767");
  EXPECT_EQ(err("[schedules.a]\nkind = \"k\"\ncron = \"@daily\"\npayload = { x = \"a\\u0000b\" }\n"),
            "F:4: schedules.a.payload must not hold a NUL character (\\u0000)");
  EXPECT_EQ(err("[schedules.a]\nkind = \"k\"\ncron = \"@daily\"\npayload = '{\"x\": \"\\u0000\"}'\n"),
            "F:4: schedules.a.payload must not hold a NUL character (\\u0000)");
  EXPECT_EQ(err("[schedules]\na = 3\n"), "F:2: schedules.a must be a table");
  EXPECT_EQ(err("[handlers.k]\ntype = \"notify\"\nconcurrency = 0\n"),
            "F:3: handlers.k.concurrency must be a whole number from 1 to 100000");
}

TEST_F(ConfigTest, EveryBadFileValueNamesKeyFileAndLine) {
  const Bad cases[] = {
      {"[scheduler]\nbatch_size = 0\n", ":2: scheduler.batch_size must be between 1 and 10000, got 0"},
      {"[scheduler]\n\nbatch_size = 10001\n", ":3: scheduler.batch_size must be between 1 and 10000, got 10001"},
      {"[scheduler]\nbatch_size = \"50\"\n", ":2: scheduler.batch_size must be an integer, got a string"},
      {"[scheduler]\nbatch_size = 5.5\n", ":2: scheduler.batch_size must be an integer, got a float"},
      {"[database]\nconnection_limit = 0\n", ":2: database.connection_limit must be between 1 and 1000, got 0"},
      {"[database]\nconnection_limit = 1001\n", ":2: database.connection_limit must be between 1 and 1000"},
      {"[database]\npool_timeout = 10\n", ":2: database.pool_timeout must be a duration string such as \"15s\", got an integer"},
      {"[database]\npool_timeout = \"10\"\n", ":2: database.pool_timeout must be a duration such as"},
      {"[database]\npool_timeout = \"0s\"\n", ":2: database.pool_timeout must be > 0"},
      {"[database]\npool_timeout = \"10 parsecs\"\n", ":2: database.pool_timeout must be a duration"},
      {"[retention]\nfailed = \"99999d\"\n", ":2: retention.failed must be at most 3650d, got \"99999d\""},
      {"[database]\npgbouncer = \"yes\"\n", ":2: database.pgbouncer must be true or false, got a string"},
      {"[database]\nurl = \"mysql://u:pw@h/db\"\n", ":2: database.url is not a valid connection string"},
      // Found by fuzz.config: the URL's parameters were read before its type was checked.
      {"[database]\nurl = 9\n", ":2: database.url must be a string, got an integer"},
      {"[database]\nurl = \"postgres://h/db?bogus=1\"\n", ":2: database.url is not a valid connection string: database url: unknown connection parameter \"bogus\""},
      {"[database]\nurl = \"postgres://h/db?connection_limit=0\"\n", ":2 (url parameter): database.connection_limit must be between 1 and 1000"},
      {"[database]\napplication_name = \"\"\n", ":2: database.application_name must be 1 to 40 characters"},
      {"[database]\nconnect_timeout = \"500ms\"\n", ":2: database.connect_timeout must be >= 1s"},
      // Beyond what statement_timeout and libpq's socket timeouts take (32-bit milliseconds).
      {"[timeouts]\nclaim = \"25d\"\n", ":2: timeouts.claim must be > 0, at most 2147483647ms (24.8d), got \"25d\""},
      {"[timeouts]\nidle_in_transaction = \"2147483648ms\"\n", ":2: timeouts.idle_in_transaction must be > 0, at most 2147483647ms (24.8d)"},
      {"[database]\nnetwork_timeout = \"30d\"\n", ":2: database.network_timeout must be >= 1s, at most 2147483647ms (24.8d)"},
      {"[scheduler]\nschedule = \"0 24 * * *\"\n", ":2: scheduler.schedule is not a valid schedule: cron: field 2 (hour): 24 is out of range 0-23"},
      {"[scheduler]\ntimezone = \"Mars/Base\"\n", ":2: scheduler.timezone is not a known IANA time zone"},
      {"[scheduler]\nlease = \"1s\"\n", ":2: scheduler.lease must be >= 3s"},
      {"[scheduler]\nconcurrency = -1\n", ":2: scheduler.concurrency must be between 1 and 10000, got -1"},
      {"[scheduler]\nlisten = 1\n", ":2: scheduler.listen must be true or false, got an integer"},
      {"[scheduler]\nbatchsize = 5\n", ":2: scheduler.batchsize is not a known key"},
      {"[schedular]\nbatch_size = 5\n", ":1: [schedular] is not a known section"},
      {"[retry]\nfactor = 0.5\n", ":2: retry.factor must be between 1 and 100, got 0.5"},
      {"[retry]\nbreaker_threshold = 0\n", ":2: retry.breaker_threshold must be between 1 and 1000"},
      {"[retry]\nbase_delay = \"10s\"\nmax_delay = \"1s\"\n", ":3: retry.max_delay must be >= retry.base_delay"},
      {"[log]\nlevel = \"verbose\"\n", ":2: log.level must be one of trace, debug, info, warn, error, off, got \"verbose\""},
      {"[log]\nformat = \"xml\"\n", ":2: log.format must be one of auto, text, json, journal"},
      {"[metrics]\nlisten = \"localhost\"\n", ":2: metrics.listen must be host:port"},
      {"[executor]\ntask_timeout = []\n", ":2: executor.task_timeout must be a plain value, not a table or array"},
      {"scheduler = 5\n", ":1: scheduler must be a [table]"},
      {"[scheduler]\nbatch_size = \n", ":2: invalid TOML"},
      {"[scheduler\nbatch_size = 5\n", ":1: invalid TOML"},
      {"[scheduler]\nbatch_size = 5\nbatch_size = 6\n", ":3: invalid TOML"},
      {"[handlers.x]\nchannel = \"c\"\n", ":1: handlers.x.type is missing"},
      {"[handlers.x]\ntype = \"carrier-pigeon\"\n", ":2: handlers.x.type must be notify, http or exec"},
      {"[handlers.x]\ntype = \"http\"\n", ":1: handlers.x.url is missing"},
      {"[handlers.x]\ntype = \"http\"\nurl = \"ftp://h\"\n", ":3: handlers.x.url must start with http:// or https://"},
      {"[handlers.x]\ntype = \"exec\"\ncommand = []\n", ":1: handlers.x.command is missing or empty"},
      {"[handlers.x]\ntype = \"exec\"\ncommand = \"rm -rf /\"\n", ":3: handlers.x.command must be an array of strings"},
      {"[handlers.x]\ntype = \"notify\"\nurl = \"http://h\"\n", ":3: handlers.x.url is not a key of a notify handler"},
      {"[handlers.x]\ntype = \"exec\"\ncommand = [\"/bin/true\"]\ninherit_env = [\"HOME\", \"DATABASE_URL\"]\n",
       ":4: handlers.x.inherit_env \"DATABASE_URL\" would pass DATABASE_URL, which holds the database's credentials"},
      {"[handlers.x]\ntype = \"exec\"\ncommand = [\"/bin/true\"]\ninherit_env = \"PATH\"\n",
       ":4: handlers.x.inherit_env must be an array of variable names"},
      {"[handlers.x]\ntype = \"http\"\nurl = \"http://h\"\nmax_response_bytes = 10\n",
       ":4: handlers.x.max_response_bytes must be a whole number of bytes from 1024 to 1073741824"},
      {"[handlers.x]\ntype = \"http\"\nurl = \"http://h\"\nca_file = \"/nonexistent/ca.pem\"\n",
       ":4: handlers.x.ca_file cannot be read: \"/nonexistent/ca.pem\""},
      {"[handlers.x]\ntype = \"http\"\nurl = \"https://agent:pw@h/run?token=t\"\n",
       ":3: handlers.x.url must not carry a user name or password (put credentials in headers), got \"https://***@h/run?***\""},
      {"[handlers.x]\ntype = \"http\"\nurl = \"http://h\"\nca_file = \"/etc/hostname\"\n",
       ":4: handlers.x.ca_file holds no PEM certificate (-----BEGIN CERTIFICATE-----): \"/etc/hostname\""},
      {"[handlers.x]\ntype = \"exec\"\ncommand = [\"/bin/true\"]\ninherit_env = [\"PG*\"]\n",
       ":4: handlers.x.inherit_env \"PG*\" would pass PGPASSWORD, which holds the database's credentials"},
      {"[handlers.x]\ntype = \"http\"\nurl = \"ftp://u:pw@h/?token=t\"\n",
       ":3: handlers.x.url must start with http:// or https://, got \"ftp://***@h/?***\""},
  };
  for (const auto& b : cases) {
    std::string e = error_of(sources(b.toml));
    EXPECT_EQ(e.rfind(path_, 0), 0u) << "toml:\n" << b.toml << "got: " << e;
    EXPECT_NE(e.find(b.expect), std::string::npos) << "toml:\n" << b.toml << "want: " << b.expect << "\ngot:  " << e;
    EXPECT_EQ(e.find('\n'), std::string::npos) << "not one line: " << e;
  }
  EXPECT_GE(std::size(cases), 25u);
}

TEST_F(ConfigTest, BadEnvironmentAndCommandLineValuesNameTheirSource) {
  ConfigSources s;
  s.default_file = "/nonexistent";
  s.env["AGENTCRON_SCHEDULER_BATCH_SIZE"] = "lots";
  EXPECT_EQ(error_of(s), "environment AGENTCRON_SCHEDULER_BATCH_SIZE: scheduler.batch_size must be an integer, got \"lots\"");
  s.env.clear();
  s.env["AGENTCRON_SCHEDULER_BATCHSIZE"] = "5";
  EXPECT_EQ(error_of(s), "environment AGENTCRON_SCHEDULER_BATCHSIZE: not a known key of [scheduler]");
  s.env.clear();
  s.env["AGENTCRON_TEST_SOMETHING"] = "ignored";  // not a config section: none of our business
  EXPECT_EQ(error_of(s), "(no error)");
  s.cli.emplace_back("scheduler.nope", "1", "--set scheduler.nope");
  EXPECT_EQ(error_of(s), "command line --set scheduler.nope: scheduler.nope is not a known key");
  s.cli.clear();
  s.cli.emplace_back("database.pgbouncer", "perhaps", "--set database.pgbouncer");
  EXPECT_EQ(error_of(s), "command line --set database.pgbouncer: database.pgbouncer must be true or false, got \"perhaps\"");
  s.cli.clear();
  s.cli.emplace_back("log.level", "loud", "--log-level");
  EXPECT_NE(error_of(s).find("command line --log-level: log.level must be one of"), std::string::npos);
}

TEST_F(ConfigTest, MissingFileIsAnError) {
  ConfigSources s;
  s.file = "/nonexistent/agentcron.toml";
  EXPECT_EQ(error_of(s), "/nonexistent/agentcron.toml: cannot be read");
}

TEST_F(ConfigTest, ErrorsNeverContainThePassword) {
  ConfigSources s = sources("[database]\nurl = \"postgres://u:hunter2@h:notaport/db\"\n");
  std::string e = error_of(s);
  EXPECT_NE(e.find("database.url"), std::string::npos);
  EXPECT_EQ(e.find("hunter2"), std::string::npos) << e;
  s.env["DATABASE_URL"] = "postgres://u:hunter2@h/db?connection_limit=zero";
  e = error_of(s);
  EXPECT_EQ(e.find("hunter2"), std::string::npos) << e;
}

TEST_F(ConfigTest, ReloadTakesOnlyTheReloadableKeys) {
  Config a = load_config(sources("[scheduler]\nbatch_size = 10\n[database]\nconnection_limit = 3\n"));
  Config b = load_config(sources("[scheduler]\nbatch_size = 99\nschedule = \"@every 2s\"\n[database]\nconnection_limit = 9\n[log]\nlevel = \"debug\"\n"));
  Config c = apply_reloadable(a, b);
  EXPECT_EQ(c.scheduler.batch_size, 99);
  EXPECT_EQ(c.scheduler.schedule, "@every 2s");
  EXPECT_EQ(c.log.level, "debug");
  EXPECT_EQ(c.database.connection_limit, 3);
}

std::string read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(ConfigDocs, DocsAndExampleFileCoverEveryKey) {
  std::string docs = read(std::string(AGENTCRON_SOURCE_DIR) + "/docs/configuration.md");
  std::string example = read(std::string(AGENTCRON_SOURCE_DIR) + "/config/agentcron.toml");
  ASSERT_FALSE(docs.empty());
  ASSERT_FALSE(example.empty());
  for (const auto& k : config_keys()) {
    EXPECT_NE(docs.find("`" + k.key + "`"), std::string::npos) << k.key << " missing from docs/configuration.md";
    EXPECT_NE(docs.find(k.env), std::string::npos) << k.env << " missing from docs/configuration.md";
    std::string name = k.key.substr(k.key.find('.') + 1);
    EXPECT_NE(example.find(name + " = " + k.default_value), std::string::npos)
        << "config/agentcron.toml lacks `" << name << " = " << k.default_value << "`";
  }
}

TEST(ConfigDocs, ExampleFileLoadsAndEqualsTheDefaults) {
  ConfigSources s;
  s.file = std::string(AGENTCRON_SOURCE_DIR) + "/config/agentcron.toml";
  Config c = load_config(s);
  Config d;
  EXPECT_EQ(c.scheduler.schedule, d.scheduler.schedule);
  EXPECT_EQ(c.database.pool_timeout, d.database.pool_timeout);
  EXPECT_EQ(c.retention.succeeded, d.retention.succeeded);
  EXPECT_EQ(c.retry.factor, d.retry.factor);
}

}  // namespace
}  // namespace agentcron
