// DATABASE_URL parsing: URL and conninfo forms, Prisma parameters, and redaction.
#include "agentcron/database_url.hpp"

#include <gtest/gtest.h>

namespace agentcron {
namespace {

std::string get(const DatabaseUrl& u, const std::string& key) { return u.get(key).value_or("<unset>"); }

TEST(DatabaseUrl, PlainPostgresUrl) {
  auto u = parse_database_url("postgres://alice:secret@db.example:5433/app");
  EXPECT_EQ(get(u, "user"), "alice");
  EXPECT_EQ(get(u, "password"), "secret");
  EXPECT_EQ(get(u, "host"), "db.example");
  EXPECT_EQ(get(u, "port"), "5433");
  EXPECT_EQ(get(u, "dbname"), "app");
}

TEST(DatabaseUrl, PostgresqlSchemeAndNoPort) {
  auto u = parse_database_url("postgresql://bob@localhost/x");
  EXPECT_EQ(get(u, "user"), "bob");
  EXPECT_EQ(get(u, "password"), "<unset>");
  EXPECT_EQ(get(u, "port"), "<unset>");
}

TEST(DatabaseUrl, TheIssuesPrismaPgbouncerUrl) {
  auto u = parse_database_url(
      "postgresql://u:p%40ss@db.example:6543/postgres?pgbouncer=true&connection_limit=1&pool_timeout=20&sslmode=require");
  EXPECT_EQ(get(u, "password"), "p@ss");
  EXPECT_EQ(get(u, "sslmode"), "require");
  EXPECT_EQ(u.prisma.pgbouncer, true);
  EXPECT_EQ(u.prisma.connection_limit, 1);
  EXPECT_EQ(u.prisma.pool_timeout, std::chrono::seconds(20));
  EXPECT_EQ(u.conninfo().find("pgbouncer"), std::string::npos);
  EXPECT_EQ(u.conninfo().find("connection_limit"), std::string::npos);
  EXPECT_EQ(u.conninfo().find("pool_timeout"), std::string::npos);
  EXPECT_NE(u.conninfo().find("sslmode='require'"), std::string::npos);
}

TEST(DatabaseUrl, SupabasePoolerUrlWithDottedUser) {
  auto u = parse_database_url(
      "postgres://postgres.abcdefghijklmnop:Sup3r%23Secret@aws-0-eu-central-1.pooler.supabase.com:6543/"
      "postgres?pgbouncer=true&connection_limit=1");
  EXPECT_EQ(get(u, "user"), "postgres.abcdefghijklmnop");
  EXPECT_EQ(get(u, "password"), "Sup3r#Secret");
  EXPECT_EQ(get(u, "host"), "aws-0-eu-central-1.pooler.supabase.com");
  EXPECT_EQ(u.prisma.pgbouncer, true);
}

TEST(DatabaseUrl, StatementAndConnectTimeoutsAndSchema) {
  auto u = parse_database_url("postgres://u@h/db?connect_timeout=7&statement_timeout=2500&schema=public&socket_timeout=3");
  EXPECT_EQ(u.prisma.connect_timeout, std::chrono::seconds(7));
  EXPECT_EQ(u.prisma.statement_timeout, std::chrono::milliseconds(2500));
  EXPECT_EQ(u.prisma.schema, "public");
  EXPECT_EQ(u.conninfo(), "user='u' host='h' dbname='db'");
}

TEST(DatabaseUrl, DurationsAcceptedForPrismaTimes) {
  auto u = parse_database_url("postgres://h/db?pool_timeout=1500ms&statement_timeout=3s");
  EXPECT_EQ(u.prisma.pool_timeout, std::chrono::milliseconds(1500));
  EXPECT_EQ(u.prisma.statement_timeout, std::chrono::seconds(3));
}

TEST(DatabaseUrl, IPv6Hosts) {
  auto u = parse_database_url("postgres://u:pw@[::1]:5432/db");
  EXPECT_EQ(get(u, "host"), "::1");
  EXPECT_EQ(get(u, "port"), "5432");
  auto v = parse_database_url("postgresql://[2001:db8::7]/db");
  EXPECT_EQ(get(v, "host"), "2001:db8::7");
}

TEST(DatabaseUrl, SeveralHosts) {
  auto u = parse_database_url("postgresql://u@primary:5432,replica:5433,[::1]/db?target_session_attrs=read-write");
  EXPECT_EQ(get(u, "host"), "primary,replica,::1");
  EXPECT_EQ(get(u, "port"), "5432,5433,");
  EXPECT_EQ(get(u, "target_session_attrs"), "read-write");
}

TEST(DatabaseUrl, UnixSocketViaPercentEncodedHost) {
  auto u = parse_database_url("postgresql://%2Fvar%2Frun%2Fpostgresql/db");
  EXPECT_EQ(get(u, "host"), "/var/run/postgresql");
  EXPECT_EQ(get(u, "dbname"), "db");
}

TEST(DatabaseUrl, UnixSocketViaHostParameter) {
  auto u = parse_database_url("postgresql:///db?host=/tmp/sock&port=6000");
  EXPECT_EQ(get(u, "host"), "/tmp/sock");
  EXPECT_EQ(get(u, "port"), "6000");
}

TEST(DatabaseUrl, OddPasswords) {
  EXPECT_EQ(get(parse_database_url("postgres://u:a%3Ab%2Fc%3Fd@h/db"), "password"), "a:b/c?d");
  EXPECT_EQ(get(parse_database_url("postgres://u:with@at@h/db"), "password"), "with@at");  // unencoded @
  EXPECT_EQ(get(parse_database_url("postgres://u:sp%20ace%27q@h/db"), "password"), "sp ace'q");
  EXPECT_EQ(get(parse_database_url("postgres://u:%E2%82%AC%25@h/db"), "password"), "\xE2\x82\xAC%");
}

TEST(DatabaseUrl, ConninfoQuotesSpecialCharacters) {
  auto u = parse_database_url("postgres://u:it's%5Cme@h/db");
  EXPECT_EQ(u.conninfo(), "user='u' password='it\\'s\\\\me' host='h' dbname='db'");
  // And libpq's own parser reads it back.
  auto back = parse_database_url(u.conninfo());
  EXPECT_EQ(get(back, "password"), "it's\\me");
}

TEST(DatabaseUrl, KeyValueConninfo) {
  auto u = parse_database_url("host=localhost port=5432 dbname=app user=svc password='a b' sslmode=disable");
  EXPECT_EQ(get(u, "host"), "localhost");
  EXPECT_EQ(get(u, "password"), "a b");
  EXPECT_EQ(get(u, "sslmode"), "disable");
}

TEST(DatabaseUrl, KeyValueConninfoWithPrismaKeysStripped) {
  auto u = parse_database_url("host=h dbname=d connection_limit=3 pgbouncer=true");
  EXPECT_EQ(u.prisma.connection_limit, 3);
  EXPECT_EQ(u.prisma.pgbouncer, true);
  EXPECT_EQ(u.conninfo(), "host='h' dbname='d'");
}

TEST(DatabaseUrl, KeyValueWithSpacesAroundEquals) {
  auto u = parse_database_url("host = h   dbname= d");
  EXPECT_EQ(get(u, "host"), "h");
  EXPECT_EQ(get(u, "dbname"), "d");
}

TEST(DatabaseUrl, EmptyMeansLibpqDefaults) {
  auto u = parse_database_url("");
  EXPECT_TRUE(u.params.empty());
  EXPECT_EQ(u.conninfo(), "");
}

TEST(DatabaseUrl, LibpqParametersAreKept) {
  auto u = parse_database_url("postgres://h/db?application_name=myapp&sslrootcert=/x.pem&keepalives=1&options=-c%20search_path%3Dx");
  EXPECT_EQ(get(u, "application_name"), "myapp");
  EXPECT_EQ(get(u, "sslrootcert"), "/x.pem");
  EXPECT_EQ(get(u, "options"), "-c search_path=x");
}

TEST(DatabaseUrl, ErrorsNeverShowThePassword) {
  const char* bad[] = {
      "mysql://u:hunter2@h/db",
      "postgres://u:hunter2@h:99999/db",
      "postgres://u:hunter2@h:port/db",
      "postgres://u:hunter2@h/db?nosuchparam=1",
      "postgres://u:hunter2@h/db?connection_limit=many",
      "postgres://u:hunter2@h/db?pgbouncer=maybe",
      "postgres://u:hunter2@h/db?pool_timeout=soon",
      "postgres://u:hunter2%zz@h/db",
      "postgres://u:hunter2@[::1/db",
      "postgres://u:hunter2@h/db?sslmode",
      "host=h password='hunter2",
      "host=h password hunter2",
  };
  for (const char* b : bad) {
    try {
      parse_database_url(b);
      ADD_FAILURE() << "accepted: " << redact_database_url(b);
    } catch (const DatabaseUrlError& e) {
      std::string msg = e.what();
      EXPECT_EQ(msg.find("hunter2"), std::string::npos) << msg;
      EXPECT_EQ(msg.rfind("database url: ", 0), 0u) << msg;
    }
  }
}

TEST(DatabaseUrlRedaction, UrlsKeepEverythingButThePassword) {
  EXPECT_EQ(redact_database_url("postgresql://u:p%40ss@db.example:6543/postgres?sslmode=require"),
            "postgresql://u:***@db.example:6543/postgres?sslmode=require");
  EXPECT_EQ(redact_database_url("postgres://u:with@at@h/db"), "postgres://u:***@h/db");
  EXPECT_EQ(redact_database_url("postgres://u@h/db"), "postgres://u@h/db");
  EXPECT_EQ(redact_database_url("postgres://h/db?password=hunter2&sslmode=require"),
            "postgres://h/db?password=***&sslmode=require");
}

TEST(DatabaseUrlRedaction, ConninfoAndBrokenInput) {
  EXPECT_EQ(redact_database_url("host=h password='a b' user=u"), "host='h' password=*** user='u'");
  std::string broken = redact_database_url("host=h password=hunter2 'unterminated");
  EXPECT_EQ(broken.find("hunter2"), std::string::npos) << broken;
  EXPECT_EQ(parse_database_url("postgres://u:hunter2@h/db").redacted().find("hunter2"), std::string::npos);
}

}  // namespace
}  // namespace agentcron
