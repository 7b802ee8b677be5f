// DATABASE_URL never leaks its password: passwords with unencoded / ? # @ : are read right or
// refused, and no form of a password shows in what agentcron prints of a URL (its errors, its
// redactions, `config check`), over thousands of random passwords in every URL shape.
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>

#include "agentcron/config.hpp"
#include "agentcron/database_url.hpp"
#include "support/secrets.hpp"

namespace agentcron {
namespace {

using testing::find_leak;
using testing::UrlShape;

std::string get(const DatabaseUrl& u, const char* key) { return u.get(key).value_or("(none)"); }

TEST(DatabaseUrlPasswords, UnencodedSpecialCharactersAreReadRight) {
  auto u = parse_database_url("postgres://app:p/ss?w#rd@db.example:5432/app?sslmode=require");
  EXPECT_EQ(get(u, "user"), "app");
  EXPECT_EQ(get(u, "password"), "p/ss?w#rd");
  EXPECT_EQ(get(u, "host"), "db.example");
  EXPECT_EQ(get(u, "port"), "5432");
  EXPECT_EQ(get(u, "dbname"), "app");
  EXPECT_EQ(get(u, "sslmode"), "require");
  EXPECT_EQ(get(parse_database_url("postgres://u:a:b@c@[::1]:5433/d"), "password"), "a:b@c");
  EXPECT_EQ(get(parse_database_url("postgres://u:x@y/z@h1:1,h2:2/d"), "host"), "h1,h2");
  // An '@' after the parameters could end the user info or sit in a value: refused, since the
  // wrong reading of a password holding "?sslmode=" would show its pieces (found by the fuzzer).
  EXPECT_THROW(parse_database_url("postgres://u:pw@h/d?application_name=ops@site"), DatabaseUrlError);
  EXPECT_EQ(get(parse_database_url("postgres://u:pw@h/d?application_name=ops%40site"), "application_name"), "ops@site");
  // A "://" inside a quoted conninfo value makes no URL (found by the fuzzer: the scheme error
  // once repeated everything before it).
  auto c = parse_database_url("host=h password='ab postgres://x' dbname=d");
  EXPECT_EQ(get(c, "password"), "ab postgres://x");
  EXPECT_EQ(redact_database_url("host=h password='ab postgres://x' dbname=d"), "host='h' password=*** dbname='d'");
}

TEST(DatabaseUrlPasswords, WhatCannotBeToldApartIsRefusedWithoutRepeatingIt) {
  struct Case {
    const char* url;
    const char* secret;
  };
  for (const Case& c : {Case{"postgres://us/er:hunter2@h/db", "hunter2"},
                        Case{"postgres://h/db?password=hun&ter2", "ter2"},
                        Case{"host=h password=hunter 2secret", "2secret"},
                        Case{"host=h password=hunter2 x=y", "hunter2"},
                        Case{"postgres://h/db?password=hunter2&connection_limit=x2secret", "x2secret"},
                        Case{"postgres://svc:gs?sslmode=require&application_name=3@db:6432/app", "gs?s"}}) {
    try {
      auto u = parse_database_url(c.url);
      ADD_FAILURE() << "accepted " << u.redacted();
    } catch (const DatabaseUrlError& e) {
      EXPECT_EQ(std::string(e.what()).find(c.secret), std::string::npos) << e.what();
    }
    if (std::string(c.secret) != "x2secret") {  // (that one is a bad value, not a piece of the password)
      EXPECT_EQ(redact_database_url(c.url).find(c.secret), std::string::npos) << redact_database_url(c.url);
    }
  }
}

// What `config check` and the errors of loading a configuration show for `url`.
std::string config_output(const std::string& url) {
  ConfigSources s;
  s.default_file = "/nonexistent";
  s.env["DATABASE_URL"] = url;
  try {
    return describe_config(load_config(s));
  } catch (const ConfigError& e) {
    return e.what();
  }
}

// Everything agentcron prints of `url`, in-process.
std::string printed(const std::string& url, bool* refused = nullptr, DatabaseUrl* parsed = nullptr) {
  std::string out = redact_database_url(url) + "\n" + config_output(url) + "\n";
  try {
    DatabaseUrl u = parse_database_url(url);
    out += u.redacted();
    if (parsed) *parsed = u;
    if (refused) *refused = false;
  } catch (const DatabaseUrlError& e) {
    out += e.what();
    if (refused) *refused = true;
  }
  return out;
}

TEST(DatabaseUrlPasswords, RandomPasswordsInEveryShapeAreReadRightOrRefusedAndNeverShown) {
  unsigned seed = 20261125;
  testing::PasswordGenerator gen(seed);
  int right = 0, refused_count = 0;
  for (int i = 0; i < 600; ++i) {
    std::string pw = gen.next();
    for (UrlShape shape : testing::kUrlShapes) {
      std::string url = testing::url_with_password(shape, "svc", pw, "db.internal", 6432, "app");
      std::string baseline = printed(testing::url_with_password(shape, "svc", "Zq", "db.internal", 6432, "app"));
      bool refused = false;
      DatabaseUrl u;
      std::string out = printed(url, &refused, &u);
      auto leak = find_leak(out, pw, baseline);
      ASSERT_FALSE(leak) << leak.value_or("") << " shown (seed " << seed << ", password #" << i << ", shape "
                         << static_cast<int>(shape) << ")";
      if (refused) {
        ++refused_count;
        // Only a raw URL may be refused; every encoded or quoted form must be read.
        EXPECT_TRUE(shape == UrlShape::raw_uri || shape == UrlShape::several_hosts_uri)
            << "refused shape " << static_cast<int>(shape) << " (password #" << i << ")";
        continue;
      }
      ++right;
      EXPECT_EQ(get(u, "password"), pw) << "password #" << i << ", shape " << static_cast<int>(shape);
      EXPECT_EQ(get(u, "user"), "svc");
      EXPECT_EQ(get(u, "dbname"), "app");
      std::string host = get(u, "host");
      EXPECT_TRUE(host == "db.internal" || host == "db.internal,db.internal" || host == "::1,db.internal") << host;
    }
  }
  // Raw URLs with these characters are read, not merely refused.
  EXPECT_GT(right, 600 * 5);
  std::cout << "read right " << right << ", refused " << refused_count << " of " << 600 * 6 << "\n";
}

TEST(DatabaseUrlFile, IsReadFromTheFileWithoutItsNewlineAndNotBesideDatabaseUrl) {
  std::string path = "/tmp/agentcron-url-file-" + std::to_string(::getpid());
  std::ofstream(path) << "postgres://svc:s3cr3t/p@h:5432/app\n";
  ConfigSources s;
  s.default_file = "/nonexistent";
  s.env["DATABASE_URL_FILE"] = path;
  Config c = load_config(s);
  EXPECT_EQ(c.database.url, "postgres://svc:s3cr3t/p@h:5432/app");
  EXPECT_EQ(c.origins.at("database.url"), "environment DATABASE_URL_FILE");
  EXPECT_EQ(describe_config(c).find("s3cr3t"), std::string::npos);
  s.env.clear();
  s.database_url_file = path;
  EXPECT_EQ(load_config(s).origins.at("database.url"), "command line --database-url-file");
  s.cli.emplace_back("database.url", "postgres://h/x", "--database-url");
  EXPECT_THROW(load_config(s), ConfigError);
  s.cli.clear();
  s.env["DATABASE_URL"] = "postgres://h/x";
  s.env["DATABASE_URL_FILE"] = path;
  s.database_url_file.reset();
  try {
    load_config(s);
    ADD_FAILURE() << "both accepted";
  } catch (const ConfigError& e) {
    EXPECT_STREQ(e.what(), "environment DATABASE_URL_FILE: DATABASE_URL is set too; set one of them");
  }
  // Something that is no URL at all (a mounted key file, say) is not read whole.
  std::ofstream(path) << std::string(70 * 1024, 'x');
  s.env.erase("DATABASE_URL");
  try {
    load_config(s);
    ADD_FAILURE() << "a 70 KiB file accepted";
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()),
              "environment DATABASE_URL_FILE: \"" + path + "\" is larger than 64 KiB: not a database url");
  }
  ::unlink(path.c_str());
  try {
    load_config(s);
    ADD_FAILURE() << "a missing file accepted";
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()), "environment DATABASE_URL_FILE: cannot read \"" + path + "\"");
  }
}

}  // namespace
}  // namespace agentcron
