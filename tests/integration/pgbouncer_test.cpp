// agentcron through Debian's real PgBouncer in transaction-pooling mode, where several client
// connections share one server connection and nothing session-scoped survives a transaction.
#include <gtest/gtest.h>
#include <signal.h>
#include <spdlog/sinks/ostream_sink.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "agentcron/log.hpp"
#include "agentcron/migrator.hpp"
#include "agentcron/task_store.hpp"
#include "agentcron/worker.hpp"
#include "support/run_worker.hpp"
#include "support/test_db.hpp"

namespace agentcron {
namespace {

using namespace std::chrono_literals;
using testing::TestDatabase;

// A PgBouncer for one test database: transaction pooling, one server connection.
class Bouncer {
 public:
  explicit Bouncer(const TestDatabase& db) {
    dir_ = "/tmp/agentcron-pgbouncer-" + std::to_string(::getpid()) + "-" + db.name();
    std::filesystem::create_directories(dir_);
    std::string server = testing::server_conninfo();  // host=… port=… user=…
    port_ = 20000 + static_cast<int>((::getpid() * 7 + db.name().size() * 131) % 20000);
    std::ofstream(dir_ + "/users.txt") << "\"agentcron\" \"\"\n";
    std::ofstream(dir_ + "/pgbouncer.ini")
        << "[databases]\n" << db.name() << " = " << server << " dbname=" << db.name() << "\n"
        << "[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = " << port_ << "\nunix_socket_dir =\n"
        << "auth_type = trust\nauth_file = " << dir_ << "/users.txt\npool_mode = transaction\n"
        << "default_pool_size = 1\nmax_client_conn = 50\nlogfile = " << dir_ << "/pgbouncer.log\n"
        << "pidfile = " << dir_ << "/pgbouncer.pid\nignore_startup_parameters = extra_float_digits,options\n";
    if (::geteuid() == 0) std::filesystem::permissions(dir_, std::filesystem::perms::all);
    pid_ = ::fork();
    if (pid_ == 0) {
      sigset_t none;
      sigemptyset(&none);
      sigprocmask(SIG_SETMASK, &none, nullptr);
      std::string ini = dir_ + "/pgbouncer.ini";
      if (::geteuid() == 0)  // pgbouncer refuses to run as root
        ::execl("/usr/sbin/pgbouncer", "pgbouncer", "-u", "postgres", ini.c_str(), nullptr);
      else
        ::execl("/usr/sbin/pgbouncer", "pgbouncer", ini.c_str(), nullptr);
      ::_exit(127);
    }
    url_ = "postgresql://agentcron@127.0.0.1:" + std::to_string(port_) + "/" + db.name();
    ready_ = testing::eventually([&] {
      try {
        pqxx::connection c("host=127.0.0.1 port=" + std::to_string(port_) + " user=agentcron dbname=" + db.name());
        return true;
      } catch (const pqxx::broken_connection&) {
        return false;
      }
    }, 10s);
  }
  ~Bouncer() {
    ::kill(pid_, SIGTERM);
    ::waitpid(pid_, nullptr, 0);
    std::filesystem::remove_all(dir_);
  }
  bool ready() const { return ready_; }
  const std::string& url() const { return url_; }
  std::string log() const {
    std::ifstream in(dir_ + "/pgbouncer.log");
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

 private:
  std::string dir_, url_;
  int port_ = 0;
  pid_t pid_ = -1;
  bool ready_ = false;
};

class PgbouncerTest : public ::testing::Test {
 protected:
  TestDatabase db;
  Bouncer bouncer{db};
  std::ostringstream logs;
  Logger log{LogFormat::text, LogLevel::warn, std::make_shared<spdlog::sinks::ostream_sink_mt>(logs)};

  Config config(bool pgbouncer_mode) {
    Config c = db.config();
    c.database.url = bouncer.url() + (pgbouncer_mode ? "?pgbouncer=true" : "");
    c.database.pgbouncer = pgbouncer_mode;
    c.database.connection_limit = 4;
    return c;
  }
  // Claims and completes from several threads, each with its own pooled connections, through
  // one server connection. Returns how many operations failed.
  int hammer(const Config& c, int threads, int rounds) {
    ConnectionPool pool(PoolOptions::from_config(c, "bouncer"), log);
    TaskStore store(pool, StoreOptions::from_config(c), log);
    std::atomic<int> failures{0};
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t)
      ts.emplace_back([&] {
        for (int r = 0; r < rounds; ++r) {
          try {
            auto tasks = store.claim_due(ClaimParams{5, {"noop"}, "bouncer", 60s});
            std::vector<Completion> cs;
            for (auto& task : tasks) {
              Completion x;
              x.id = task.id;
              x.claim_token = task.claim_token;
              x.attempt = task.attempt;
              cs.push_back(x);
            }
            store.complete_many(cs, "bouncer");
            store.status();
          } catch (const DatabaseError& e) {
            ++failures;
          }
        }
      });
    for (auto& t : ts) t.join();
    return failures;
  }
};

TEST_F(PgbouncerTest, PgbouncerModeWorksInTransactionPooling) {
  ASSERT_TRUE(bouncer.ready()) << bouncer.log();
  db.insert_due(400);
  EXPECT_EQ(hammer(config(true), 4, 30), 0) << logs.str();
  EXPECT_EQ(db.scalar("SELECT count(*) FROM agentcron.agent_tasks WHERE status = 'succeeded'"), 400);
}

TEST_F(PgbouncerTest, NamedPreparedStatementsWouldBreakThereWhichIsWhyThatModeExists) {
  ASSERT_TRUE(bouncer.ready()) << bouncer.log();
  db.insert_due(400);
  // The control: the same load with prepared statements fails through a transaction pooler.
  EXPECT_GT(hammer(config(false), 4, 30), 0);
}

TEST_F(PgbouncerTest, MigrateAndAWholeWorkerRunThroughIt) {
  ASSERT_TRUE(bouncer.ready()) << bouncer.log();
  Config c = config(true);
  c.scheduler.schedule = "@every 100ms";
  c.scheduler.concurrency = 16;
  {
    ConnectionPool pool(PoolOptions::from_config(c, "m"), log);
    TaskStore store(pool, StoreOptions::from_config(c), log);
    EXPECT_EQ(Migrator(store, log).migrate(), 0);  // the advisory lock is transaction-scoped
  }
  db.insert_due(1000);
  class Noop final : public Handler {
   public:
    TaskOutcome run(const Task&, const HandlerContext&) override { return TaskOutcome::success(); }
  };
  HandlerRegistry reg;
  reg.add("noop", std::make_shared<Noop>());
  Worker worker(c, std::move(reg), log, "bouncer-worker");
  bool done = testing::run_worker_until(
      worker, [&] { return db.scalar("SELECT count(*) FROM agentcron.agent_tasks WHERE status = 'succeeded'") == 1000; }, 60s);
  EXPECT_TRUE(done) << logs.str();
  EXPECT_EQ(db.scalar("SELECT max(attempts) FROM agentcron.agent_tasks"), 1);
  EXPECT_EQ(logs.str().find("LISTEN"), std::string::npos) << "pgbouncer mode must not LISTEN";
}

}  // namespace
}  // namespace agentcron
