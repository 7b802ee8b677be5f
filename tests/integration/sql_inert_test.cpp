// SQL text is inert: kinds, agent ids, dedup keys, payloads, errors, results and notification
// channels made of quotes, backslashes, dollar quotes, semicolons, comments and characters of
// every Unicode plane land byte for byte — through prepared statements, through inlined
// parameters (pgbouncer mode) and through Debian's real PgBouncer — and nothing in them runs. A
// NUL byte, which PostgreSQL text cannot hold, is refused with a clear error.
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>

#include <random>
#include <sstream>

#include "agentcron/log.hpp"
#include "agentcron/pool.hpp"
#include "agentcron/pg_task_store.hpp"
#include "support/bouncer.hpp"
#include "support/test_db.hpp"

namespace agentcron {
namespace {

using namespace std::chrono_literals;

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// Hostile text: fragments that end a literal, an identifier, a dollar quote or a statement,
// parameters markers, comments, escapes, and characters from all 17 planes.
class HostileText {
 public:
  explicit HostileText(unsigned seed) : rng_(seed) {}
  std::string next() {
    static const std::vector<std::string> fragments = {
        "'", "''", "\\", "\\'", "\"", "$$", "$x$", "$1", "$13", ";", "--", "/*", "*/", "E'", "%s", "?", "\n", "\r\n",
        "\t", "'); INSERT INTO canary VALUES (1); --", "$$; DROP TABLE canary; $$", "\"; DROP TABLE canary; --",
        "\\x00", "\\u0000", "{\"a\":1}", "{", "}", ",", "NULL", "\\N", "ARRAY[", "::text", " OR 1=1"};
    std::uniform_int_distribution<int> parts(1, 6), kind(0, 2);
    std::uniform_int_distribution<std::size_t> frag(0, fragments.size() - 1);
    std::uniform_int_distribution<int> plane(0, 16);
    std::uniform_int_distribution<std::uint32_t> low(0x20, 0xFFFD);
    std::string out;
    for (int i = parts(rng_); i > 0; --i) {
      if (kind(rng_) < 2) {
        out += fragments[frag(rng_)];
        continue;
      }
      char32_t cp = static_cast<char32_t>((static_cast<std::uint32_t>(plane(rng_)) << 16) | low(rng_));
      if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD;  // no surrogates: they are not UTF-8
      append_utf8(out, cp);
    }
    return out;
  }

 private:
  std::mt19937 rng_;
};

std::string json_string_payload(const std::string& s) {
  std::string p = "{\"s\":\"";
  append_json_escaped(p, s);
  return p + "\"}";
}

enum class Mode { prepared, inlined, pgbouncer };

class SqlInert : public ::testing::TestWithParam<Mode> {
 protected:
  testing::TestDatabase db;
  std::ostringstream logs;
  Logger log{LogFormat::text, LogLevel::warn, std::make_shared<spdlog::sinks::ostream_sink_mt>(logs)};
  std::unique_ptr<testing::Bouncer> bouncer;
  std::unique_ptr<ConnectionPool> pool;
  std::unique_ptr<PgTaskStore> store;

  void SetUp() override {
    db.exec("CREATE TABLE public.canary (x int)");
    Config c = db.config();
    if (GetParam() == Mode::pgbouncer) {
      bouncer = std::make_unique<testing::Bouncer>(db);
      ASSERT_TRUE(bouncer->ready()) << bouncer->log();
      c.database.url = bouncer->url();
    }
    c.database.pgbouncer = GetParam() != Mode::prepared;
    pool = std::make_unique<ConnectionPool>(PoolOptions::from_config(c, "w-inert"), log);
    store = std::make_unique<PgTaskStore>(*pool, StoreOptions::from_config(c), log);
  }
  void TearDown() override {
    store.reset();
    pool.reset();
  }
  // The text of column `col` of task `id`, read back with a parameter of libpq's own.
  std::string column(std::int64_t id, const std::string& col) {
    pqxx::work tx(db.sql());
    auto r = tx.exec_params("SELECT " + col + " FROM agentcron.agent_tasks WHERE id = $1", id);
    return r[0][0].is_null() ? "<null>" : r[0][0].as<std::string>();
  }
};

TEST_P(SqlInert, HostileTextLandsByteForByteAndNothingRuns) {
  HostileText gen(7 + static_cast<unsigned>(GetParam()));
  for (int i = 0; i < 150; ++i) {
    std::string h = gen.next();
    SCOPED_TRACE("string #" + std::to_string(i));
    EnqueueParams p;
    p.kind = h;
    p.agent_id = h;
    p.dedup_key = h;
    p.payload = json_string_payload(h);
    std::int64_t id = store->enqueue(p).id;
    EXPECT_EQ(column(id, "kind"), h);
    EXPECT_EQ(column(id, "agent_id"), h);
    EXPECT_EQ(column(id, "dedup_key"), h);
    EXPECT_EQ(column(id, "payload->>'s'"), h);

    ClaimParams cp;
    cp.kinds = {h};
    cp.worker = "w-inert";
    auto claimed = store->claim_due(cp);
    ASSERT_EQ(claimed.size(), 1u);
    EXPECT_EQ(claimed[0].id, id);
    EXPECT_EQ(claimed[0].kind, h);
    EXPECT_EQ(claimed[0].agent_id, h);
    EXPECT_TRUE(claimed[0].defect.empty()) << claimed[0].defect;

    Completion done;
    done.id = id;
    done.claim_token = claimed[0].claim_token;
    done.attempt = claimed[0].attempt;
    done.status = Completion::Status::failed;
    done.error = h;
    done.result = h;
    done.run_outcome = "failed";
    done.notify_channel = h.size() < 64 ? h : "agentcron_ready";  // a channel is at most 63 bytes
    done.notify_payload = h;
    EXPECT_EQ(store->complete_many({done}, "w-inert"), std::vector<std::int64_t>{id});
    EXPECT_EQ(column(id, "last_error"), h);
    EXPECT_EQ(column(id, "result"), h);
  }
  EXPECT_EQ(db.scalar("SELECT count(*) FROM public.canary"), 0);
  EXPECT_EQ(db.scalar("SELECT count(*) FROM agentcron.agent_tasks WHERE status <> 'failed'"), 0);
}

TEST_P(SqlInert, ANulByteIsRefusedWithAClearErrorAndNothingIsWritten) {
  EnqueueParams p;
  p.kind = std::string("ki\0nd'; DROP TABLE canary; --", 29);
  try {
    store->enqueue(p);
    ADD_FAILURE() << "a NUL byte was accepted";
  } catch (const DatabaseError& e) {
    EXPECT_NE(std::string(e.what()).find("holds a NUL byte, which PostgreSQL cannot store"), std::string::npos) << e.what();
    EXPECT_TRUE(e.refuses_values());
  }
  EXPECT_EQ(db.scalar("SELECT count(*) FROM agentcron.agent_tasks"), 0);
  EXPECT_EQ(db.scalar("SELECT count(*) FROM public.canary"), 0);
  // The store still works after the refusal.
  p.kind = "fine";
  EXPECT_GT(store->enqueue(p).id, 0);
}

INSTANTIATE_TEST_SUITE_P(Modes, SqlInert, ::testing::Values(Mode::prepared, Mode::inlined, Mode::pgbouncer),
                         [](const auto& param_info) {
                           switch (param_info.param) {
                             case Mode::prepared: return std::string("Prepared");
                             case Mode::inlined: return std::string("InlinedParameters");
                             case Mode::pgbouncer: return std::string("ThroughPgbouncer");
                           }
                           return std::string("?");
                         });

}  // namespace
}  // namespace agentcron
