// The http handler against endpoints that answer too much or cannot be trusted: a gzip bomb and
// oversized replies stop being read at max_response_bytes (memory stays flat), a self-signed
// certificate is refused unless it is the configured ca_file, URLs in messages hide userinfo and
// query, and the Idempotency-Key names one attempt of one occurrence.
#include <gtest/gtest.h>
#include <httplib.h>
#include <sys/resource.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <thread>

#include "agentcron/database_url.hpp"
#include "agentcron/handlers/http.hpp"

namespace agentcron {
namespace {

using namespace std::chrono_literals;

Task task() {
  Task t;
  t.id = 41;
  t.kind = "call_agent";
  t.attempt = 1;
  return t;
}

long peak_rss_kib() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss;
}

// A gzip stream of zeros produced as it is read: 1 GiB in all when read to the end, 1032:1
// (deflate's limit), about 1 MiB on the wire.
class ZeroBomb {
 public:
  static constexpr std::size_t kTotal = std::size_t{1} << 30;
  ZeroBomb() { deflateInit2(&z_, 9, Z_DEFLATED, 15 + 16, 9, Z_DEFAULT_STRATEGY); }
  ~ZeroBomb() { deflateEnd(&z_); }
  // The next piece of the stream, "" once it ended.
  std::string next() {
    std::string out;
    while (out.empty() && !done_) out = feed();  // deflate holds back small outputs
    return out;
  }
  std::size_t fed() const { return fed_; }

 private:
  std::string feed() {
    static const std::string zeros(1 << 20, '\0');
    bool last = fed_ + zeros.size() >= kTotal;
    z_.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(zeros.data()));
    z_.avail_in = static_cast<uInt>(zeros.size());
    fed_ += zeros.size();
    std::string out;
    char buf[1 << 16];
    do {
      z_.next_out = reinterpret_cast<Bytef*>(buf);
      z_.avail_out = sizeof buf;
      deflate(&z_, last ? Z_FINISH : Z_NO_FLUSH);
      out.append(buf, sizeof buf - z_.avail_out);
    } while (z_.avail_out == 0 || (last && z_.avail_in > 0));
    done_ = last;
    return out;
  }
  z_stream z_{};
  std::size_t fed_ = 0;
  bool done_ = false;
};

class HostileReplies : public ::testing::Test {
 protected:
  httplib::Server server;
  int port = 0;
  std::thread thread;

  void SetUp() override {
    server.Post("/bomb", [](const httplib::Request&, httplib::Response& res) {
      res.set_header("Content-Encoding", "gzip");
      auto bomb = std::make_shared<ZeroBomb>();
      res.set_chunked_content_provider("application/octet-stream", [bomb](std::size_t, httplib::DataSink& sink) {
        std::string piece = bomb->next();
        if (piece.empty()) {
          sink.done();
          return true;
        }
        return sink.write(piece.data(), piece.size());
      });
    });
    server.Post("/big", [](const httplib::Request&, httplib::Response& res) {
      res.set_content(std::string(3 << 20, 'x'), "application/json");
    });
    server.Post("/big-503", [](const httplib::Request&, httplib::Response& res) {
      res.status = 503;
      res.set_content(std::string(3 << 20, 'x'), "text/html");
    });
    // A reply that never ends in time: a chunk every 100 ms, each within httplib's per-read
    // timeout, for six seconds (the fault injected is the slowness itself).
    server.Post("/drip", [](const httplib::Request&, httplib::Response& res) {
      auto sent = std::make_shared<int>(0);
      res.set_chunked_content_provider("application/json", [sent](std::size_t, httplib::DataSink& sink) {
        if (++*sent > 60) {
          sink.done();
          return true;
        }
        std::this_thread::sleep_for(100ms);
        return sink.write("{}", 2);
      });
    });
    server.Post("/fine", [](const httplib::Request& req, httplib::Response& res) {
      res.set_content("{\"key\":\"" + req.get_header_value("Idempotency-Key") + "\"}", "application/json");
    });
    port = server.bind_to_any_port("127.0.0.1");
    thread = std::thread([this] { server.listen_after_bind(); });
  }
  void TearDown() override {
    server.stop();
    thread.join();
  }
  TaskOutcome call(const std::string& path, std::size_t max = 1 << 20) {
    HttpOptions o{"http://127.0.0.1:" + std::to_string(port) + path, "POST", {}, 30s, true};
    o.max_response_bytes = max;
    return HttpHandler(o).run(task(), HandlerContext{{}, std::chrono::steady_clock::now() + 1h});
  }
};

TEST_F(HostileReplies, AGzipBombFailsItsTaskAndMemoryStaysFlat) {
  long before = peak_rss_kib();
  auto o = call("/bomb");
  long grown_mib = (peak_rss_kib() - before) / 1024;
  EXPECT_EQ(o.kind, TaskOutcome::Kind::failed);
  EXPECT_EQ(o.message,
            "http: HTTP 200 reply larger than max_response_bytes (1048576 bytes, decompressed); reading stopped");
  EXPECT_LT(grown_mib, 64) << "the whole GiB was held in memory";
}

TEST_F(HostileReplies, APlainReplyAboveTheLimitFailsAndAServerErrorAboveItRetries) {
  auto big = call("/big");
  EXPECT_EQ(big.kind, TaskOutcome::Kind::failed);
  EXPECT_NE(big.message.find("larger than max_response_bytes"), std::string::npos) << big.message;
  auto big503 = call("/big-503");
  EXPECT_EQ(big503.kind, TaskOutcome::Kind::retry);
  EXPECT_EQ(big503.message.rfind("http: HTTP 503 reply larger", 0), 0u) << big503.message;
  // A limit the reply fits in reads it whole.
  EXPECT_EQ(call("/big", 4 << 20).kind, TaskOutcome::Kind::succeeded);
}

TEST_F(HostileReplies, AReplyStillDrippingAtTheTimeoutIsCutThere) {
  HttpOptions o{"http://127.0.0.1:" + std::to_string(port) + "/drip", "POST", {}, 500ms, true};
  auto start = std::chrono::steady_clock::now();
  auto out = HttpHandler(o).run(task(), HandlerContext{{}, std::chrono::steady_clock::now() + 1h});
  EXPECT_LT(std::chrono::steady_clock::now() - start, 3s) << "read the whole six-second reply";
  EXPECT_EQ(out.kind, TaskOutcome::Kind::retry);
  EXPECT_EQ(out.message.rfind("http: no complete reply within the timeout of ", 0), 0u) << out.message;
  EXPECT_NE(out.message.find("/drip)"), std::string::npos) << out.message;
}

TEST_F(HostileReplies, TheIdempotencyKeyNamesTheOccurrenceOfARecurringTask) {
  Task once = task();
  EXPECT_EQ(HttpHandler::idempotency_key(once), "agentcron-41-1");
  Task nightly = task();
  nightly.cron = "30 2 * * *";
  nightly.occurrence = std::chrono::system_clock::from_time_t(1764037800);  // 2025-11-25 02:30:00 UTC
  EXPECT_EQ(HttpHandler::idempotency_key(nightly), "agentcron-41-20251125T023000.000Z-1");
  nightly.attempt = 2;  // a retry of the same occurrence
  EXPECT_EQ(HttpHandler::idempotency_key(nightly), "agentcron-41-20251125T023000.000Z-2");
  nightly.attempt = 1;
  nightly.occurrence += 24h;  // the next night
  EXPECT_EQ(HttpHandler::idempotency_key(nightly), "agentcron-41-20251126T023000.000Z-1");
  nightly.occurrence += 250ms;  // an @every schedule firing within the second
  EXPECT_EQ(HttpHandler::idempotency_key(nightly), "agentcron-41-20251126T023000.250Z-1");
  nightly.occurrence -= 250ms;
  // …and the server sees it.
  HttpHandler h(HttpOptions{"http://127.0.0.1:" + std::to_string(port) + "/fine", "POST", {}, 30s, true});
  auto o = h.run(nightly, HandlerContext{{}, std::chrono::steady_clock::now() + 1h});
  EXPECT_EQ(o.message, "{\"key\":\"agentcron-41-20251126T023000.000Z-1\"}");
}

TEST(HttpUrls, MessagesShowNeitherUserinfoNorQuery) {
  HttpHandler h(HttpOptions{"http://agent:pa55word@127.0.0.1:1/run?token=t0ps3cret#frag", "POST", {}, 2s, true});
  auto o = h.run(task(), HandlerContext{{}, std::chrono::steady_clock::now() + 1h});
  EXPECT_EQ(o.kind, TaskOutcome::Kind::retry);
  EXPECT_EQ(o.message.find("pa55word"), std::string::npos) << o.message;
  EXPECT_EQ(o.message.find("t0ps3cret"), std::string::npos) << o.message;
  EXPECT_EQ(redact_url("https://u:p/w?d@host:8443/path?token=abc&x=1#f"), "https://***@host:8443/path?***");
  EXPECT_EQ(redact_url("http://host/path"), "http://host/path");
  EXPECT_EQ(redact_url("http://host/p?q=a@b"), "http://***@b");  // over-hiding is the safe side
}

// A self-signed certificate for 127.0.0.1, made by the openssl program in a directory of its own.
class SelfSigned : public ::testing::Test {
 protected:
  std::filesystem::path dir = std::filesystem::temp_directory_path() /
                              ("agentcron-tls-" + std::to_string(::getpid()));
  std::string cert = (dir / "cert.pem").string(), key = (dir / "key.pem").string();
  std::unique_ptr<httplib::SSLServer> server;
  int port = 0;
  std::thread thread;

  void SetUp() override {
    std::filesystem::create_directories(dir);
    std::string cmd = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=127.0.0.1 "
                      "-addext subjectAltName=IP:127.0.0.1 -keyout " + key + " -out " + cert + " 2>/dev/null";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    server = std::make_unique<httplib::SSLServer>(cert.c_str(), key.c_str());
    ASSERT_TRUE(server->is_valid());
    server->Post("/run", [](const httplib::Request&, httplib::Response& res) { res.set_content("{\"ok\":true}", "application/json"); });
    port = server->bind_to_any_port("127.0.0.1");
    thread = std::thread([this] { server->listen_after_bind(); });
  }
  void TearDown() override {
    if (server) server->stop();
    if (thread.joinable()) thread.join();
    std::filesystem::remove_all(dir);
  }
  TaskOutcome call(std::string ca_file) {
    HttpOptions o{"https://127.0.0.1:" + std::to_string(port) + "/run", "POST", {}, 10s, true};
    o.ca_file = std::move(ca_file);
    return HttpHandler(o).run(task(), HandlerContext{{}, std::chrono::steady_clock::now() + 1h});
  }
};

TEST_F(SelfSigned, IsRefusedByDefaultAndAcceptedAsTheConfiguredCaFile) {
  auto refused = call("");
  EXPECT_EQ(refused.kind, TaskOutcome::Kind::failed);
  EXPECT_EQ(refused.message, "http: TLS certificate verification failed (POST https://127.0.0.1:" + std::to_string(port) + "/run)");
  auto accepted = call(cert);
  EXPECT_EQ(accepted.kind, TaskOutcome::Kind::succeeded) << accepted.message;
  EXPECT_EQ(accepted.message, "{\"ok\":true}");
}

}  // namespace
}  // namespace agentcron
