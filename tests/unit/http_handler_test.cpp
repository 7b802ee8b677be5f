// HttpHandler against real HTTP servers on loopback: status codes, Retry-After in both forms,
// timeouts, refused and broken connections, cancellation; the request checked on the server side.
#include "agentcron/handlers/http.hpp"

#include <gtest/gtest.h>
#include <httplib.h>

#include <latch>
#include <mutex>
#include <thread>

#include "agentcron/utf8.hpp"
#include "support/raw_server.hpp"
#include "support/scoped_env.hpp"

namespace agentcron {
namespace {

using namespace std::chrono_literals;

using testing::RawServer;

Task task() {
  Task t;
  t.id = 77;
  t.kind = "call_agent";
  t.attempt = 2;
  t.agent_id = "agent \"7\"";
  t.payload = "{\"to\":\"inbox\",\"n\":[1,2]}";
  return t;
}

class HttpTest : public ::testing::Test {
 protected:
  httplib::Server server;
  int port = 0;
  std::thread thread;
  std::mutex mu;
  std::vector<httplib::Request> received;

  void SetUp() override {
    auto record = [this](const httplib::Request& r) {
      std::lock_guard lock(mu);
      received.push_back(r);
    };
    auto status = [&](const char* path, int code, std::string body, std::string type = "text/plain",
                      std::vector<std::pair<std::string, std::string>> headers = {}) {
      server.Post(path, [=](const httplib::Request& req, httplib::Response& res) {
        record(req);
        res.status = code;
        for (auto& [k, v] : headers) res.set_header(k, v);
        res.set_content(body, type);
      });
    };
    status("/ok", 200, "fine");
    status("/created", 201, "{\"agent_run\":\"r-17\"}", "application/json");
    status("/bad", 400, "payload.to is required");
    status("/missing", 404, "no such agent");
    status("/slow-client", 408, "");
    status("/busy", 429, "slow down", "text/plain", {{"Retry-After", "120"}});
    status("/busy-date", 429, "", "text/plain", {{"Retry-After", "Wed, 21 Oct 2099 07:28:00 GMT"}});
    status("/error", 500, "stack trace");
    status("/unavailable", 503, "");
    status("/redirect", 301, "");
    // Replies in bytes that are not UTF-8: a JSON body with a character cut at the kept limit,
    // and binary garbage in an error.
    std::string jp = "{\"x\":\"";
    for (int i = 0; i < 1000; ++i) jp += "\xE6\x97\xA5";
    status("/utf8-cut", 200, jp + "\"}", "application/json");
    status("/binary-error", 500, std::string("\xFF\xFE\x00\x01 oops \xC3", 11));
    server.Put("/put", [=](const httplib::Request& req, httplib::Response& res) {
      record(req);
      res.status = 204;
    });
    port = server.bind_to_any_port("127.0.0.1");
    // Bound and listening already: connections wait in the backlog until the accept loop runs.
    thread = std::thread([this] { server.listen_after_bind(); });
  }
  void TearDown() override {
    server.stop();
    thread.join();
  }
  TaskOutcome call(const std::string& url, Millis timeout = 5s, std::string method = "POST",
                   std::stop_token stop = {}) {
    HttpHandler h(HttpOptions{url, method, {{"Authorization", "Bearer t0k3n"}}, timeout, true});
    return h.run(task(), HandlerContext{stop, std::chrono::steady_clock::now() + 1h});
  }
  std::string base() const { return "http://127.0.0.1:" + std::to_string(port); }
};

TEST_F(HttpTest, TwoHundredSucceedsAndTheServerSeesBodyAndIdempotencyKey) {
  auto o = call(base() + "/ok");
  EXPECT_EQ(o.kind, TaskOutcome::Kind::succeeded);
  EXPECT_EQ(o.message, "");  // not JSON: nothing kept
  std::lock_guard lock(mu);
  ASSERT_EQ(received.size(), 1u);
  const auto& r = received[0];
  EXPECT_EQ(r.get_header_value("Idempotency-Key"), "agentcron-77-2");
  EXPECT_EQ(r.get_header_value("Content-Type"), "application/json");
  EXPECT_EQ(r.get_header_value("Authorization"), "Bearer t0k3n");
  EXPECT_EQ(r.body,
            "{\"task_id\":77,\"agent_id\":\"agent \\\"7\\\"\",\"kind\":\"call_agent\",\"attempt\":2,"
            "\"payload\":{\"to\":\"inbox\",\"n\":[1,2]}}");
}

TEST_F(HttpTest, CreatedKeepsTheJsonBody) {
  auto o = call(base() + "/created");
  EXPECT_EQ(o.kind, TaskOutcome::Kind::succeeded);
  EXPECT_EQ(o.message, "{\"agent_run\":\"r-17\"}");
}

TEST_F(HttpTest, ClientErrorsFailPermanentlyWithStatusAndBody) {
  auto bad = call(base() + "/bad");
  EXPECT_EQ(bad.kind, TaskOutcome::Kind::failed);
  EXPECT_EQ(bad.message, "HTTP 400: payload.to is required");
  auto missing = call(base() + "/missing");
  EXPECT_EQ(missing.kind, TaskOutcome::Kind::failed);
  EXPECT_EQ(missing.message, "HTTP 404: no such agent");
  EXPECT_EQ(call(base() + "/redirect").kind, TaskOutcome::Kind::failed);
}

TEST_F(HttpTest, TimeoutStatusesAndServerErrorsRetry) {
  for (const char* p : {"/slow-client", "/error", "/unavailable"}) {
    auto o = call(base() + p);
    EXPECT_EQ(o.kind, TaskOutcome::Kind::retry) << p;
    EXPECT_FALSE(o.retry_not_before) << p;
  }
  EXPECT_EQ(call(base() + "/error").message, "HTTP 500: stack trace");
}

TEST_F(HttpTest, RetryAfterInSecondsAndAsAnHttpDate) {
  auto before = std::chrono::system_clock::now();
  auto s = call(base() + "/busy");
  EXPECT_EQ(s.kind, TaskOutcome::Kind::retry);
  ASSERT_TRUE(s.retry_not_before);
  EXPECT_GE(*s.retry_not_before, before + 119s);
  EXPECT_LE(*s.retry_not_before, std::chrono::system_clock::now() + 121s);
  auto d = call(base() + "/busy-date");
  ASSERT_TRUE(d.retry_not_before);
  EXPECT_EQ(std::chrono::system_clock::to_time_t(*d.retry_not_before), 4096250880);  // 2099-10-21T07:28:00Z
}

TEST_F(HttpTest, OtherMethods) {
  EXPECT_EQ(call(base() + "/put", 5s, "PUT").kind, TaskOutcome::Kind::succeeded);
  std::lock_guard lock(mu);
  EXPECT_EQ(received.at(0).method, "PUT");
}

TEST(HttpFailures, AServerThatNeverAnswersTimesOut) {
  RawServer silent(RawServer::Mode::never_answer);
  HttpHandler h(HttpOptions{"http://127.0.0.1:" + std::to_string(silent.port()) + "/x", "POST", {}, 300ms, true});
  auto start = std::chrono::steady_clock::now();
  auto o = h.run(task(), HandlerContext{{}, std::chrono::steady_clock::now() + 1h});
  EXPECT_EQ(o.kind, TaskOutcome::Kind::retry);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
}

TEST(HttpFailures, ARefusedPortRetries) {
  HttpHandler h(HttpOptions{"http://127.0.0.1:1/x", "POST", {}, 2s, true});
  auto o = h.run(task(), HandlerContext{{}, std::chrono::steady_clock::now() + 1h});
  EXPECT_EQ(o.kind, TaskOutcome::Kind::retry);
  EXPECT_NE(o.message.find("connection failed"), std::string::npos) << o.message;
}

TEST(HttpFailures, AServerClosingMidResponseRetries) {
  RawServer s(RawServer::Mode::close_mid_response);
  HttpHandler h(HttpOptions{"http://127.0.0.1:" + std::to_string(s.port()) + "/x", "POST", {}, 2s, true});
  auto o = h.run(task(), HandlerContext{{}, std::chrono::steady_clock::now() + 1h});
  EXPECT_EQ(o.kind, TaskOutcome::Kind::retry);
  EXPECT_NE(o.message.find("connection closed while reading"), std::string::npos) << o.message;
}

TEST(HttpFailures, AStopRequestAbortsTheRequestInFlight) {
  RawServer silent(RawServer::Mode::never_answer);
  HttpHandler h(HttpOptions{"http://127.0.0.1:" + std::to_string(silent.port()) + "/x", "POST", {}, 60s, true});
  std::stop_source stop;
  std::thread stopper([&] {
    std::this_thread::sleep_for(200ms);  // let the request reach the server
    stop.request_stop();
  });
  auto start = std::chrono::steady_clock::now();
  auto o = h.run(task(), HandlerContext{stop.get_token(), std::chrono::steady_clock::now() + 1h});
  stopper.join();
  EXPECT_TRUE(o.cancelled);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
}

TEST(RetryAfter, ParsesBothFormsAndRejectsJunk) {
  auto now = std::chrono::system_clock::from_time_t(1'000'000'000);
  EXPECT_EQ(parse_retry_after("30", now), now + 30s);
  EXPECT_EQ(parse_retry_after(" 0 ", now), now);
  EXPECT_EQ(std::chrono::system_clock::to_time_t(*parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now)), 784111777);
  // A date past what the clock can hold is read as 2200-01-01, not overflowed.
  EXPECT_EQ(std::chrono::system_clock::to_time_t(*parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now)), 7258118400);
  EXPECT_FALSE(parse_retry_after("soon", now));
  EXPECT_FALSE(parse_retry_after("-5", now));
  EXPECT_FALSE(parse_retry_after("", now));
}

TEST(ExpandEnv, RefusesTheDatabaseCredentials) {
  testing::ScopedEnv env{{"DATABASE_URL", "postgres://u:secretpw@h/db"}};
  try {
    expand_env("Bearer ${DATABASE_URL}");
    ADD_FAILURE() << "the database url was put in a header";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "${DATABASE_URL} would pass DATABASE_URL, which holds the database's credentials");
  }
}

TEST(ExpandEnv, SubstitutesAndNamesAMissingVariable) {
  ::setenv("AGENTCRON_TEST_TOKEN", "s3cret", 1);
  EXPECT_EQ(expand_env("Bearer ${AGENTCRON_TEST_TOKEN}"), "Bearer s3cret");
  EXPECT_EQ(expand_env("plain"), "plain");
  try {
    expand_env("Bearer ${AGENTCRON_TEST_UNSET_VAR}");
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "environment variable AGENTCRON_TEST_UNSET_VAR is not set");
  }
}

TEST_F(HttpTest, RepliesThatAreNotUtf8OrCutInsideACharacterBecomeValidText) {
  auto ok = call(base() + "/utf8-cut");
  ASSERT_EQ(ok.kind, TaskOutcome::Kind::succeeded) << ok.message;
  EXPECT_LE(ok.message.size(), 2048u);  // keep_body, cut on a character boundary …
  EXPECT_EQ(valid_utf8(ok.message), ok.message);
  EXPECT_EQ(ok.message.substr(ok.message.size() - 3), "\xE2\x80\xA6");  // … and saying so
  auto bad = call(base() + "/binary-error");
  EXPECT_EQ(bad.kind, TaskOutcome::Kind::retry);
  EXPECT_EQ(bad.message, "HTTP 500: \xEF\xBF\xBD\xEF\xBF\xBD\x01 oops \xEF\xBF\xBD");
}

}  // namespace
}  // namespace agentcron
