// libFuzzer target for DATABASE_URL: any text parses or throws DatabaseUrlError, and redaction
// never crashes. Its oracle is the password-leak check: a password (the input) written into every
// URL shape is read back exactly where the shape encodes it, and no form of it appears in an
// error message or a redacted rendering.
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <string>

#include "agentcron/database_url.hpp"
#include "support/secrets.hpp"

namespace {

using agentcron::testing::UrlShape;

// What agentcron may print of `url`: its redactions, or the parse error.
std::string printed(const std::string& url, std::string* password = nullptr) {
  std::string out = agentcron::redact_database_url(url) + "\n";
  try {
    auto u = agentcron::parse_database_url(url);
    out += u.redacted();
    if (password) *password = u.get("password").value_or("(none)");
  } catch (const agentcron::DatabaseUrlError& e) {
    out += e.what();
    if (password) *password = "(refused)";
  }
  return out;
}

[[noreturn]] void fail(const char* what, const std::string& url) {
  std::fprintf(stderr, "%s\nurl: %s\n", what, url.c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  std::string rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] & 0x80) {  // any text at all
    printed(rest);
    return 0;
  }
  if (rest.size() > 64 || rest.find('\0') != std::string::npos) return 0;
  UrlShape shape = agentcron::testing::kUrlShapes[data[0] % std::size(agentcron::testing::kUrlShapes)];
  std::string url = agentcron::testing::url_with_password(shape, "svc", rest, "db.internal", 6432, "app");
  // What is printed anyway: the output for another password, and every error message.
  static const std::string messages = [] {
    std::string all;
    for (const char* bad : {"mysql://h", "postgres://us/er:p@h", "postgres://u:p@h/d?application_name=a@b",
                            "postgres://u:p%zz@h", "postgres://h:0", "postgres://[h", "postgres://[h]x",
                            "postgres://h?nosuch=1", "postgres://h?x", "postgres://h?connection_limit=x",
                            "postgres://h?pool_timeout=x", "postgres://h?statement_timeout=x",
                            "postgres://h?pgbouncer=x", "postgres://h?password=a&b", "host", "host='a",
                            "password=a b"})
      all += printed(bad) + "\n";
    return all;
  }();
  std::string baseline = messages + printed(agentcron::testing::url_with_password(shape, "svc", "Zq", "db.internal", 6432, "app"));
  std::string password;
  std::string out = printed(url, &password);
  // A password the rest of the URL already spells out cannot be told from it.
  if (rest.size() >= 4 && baseline.find(rest) == std::string::npos)
    if (auto leak = agentcron::testing::find_leak(out, rest, baseline)) fail(("leaked " + *leak).c_str(), url);
  bool exact_shape = shape != UrlShape::raw_uri && shape != UrlShape::several_hosts_uri;
  if (exact_shape && password != rest) fail("an encoded or quoted password was not read back exactly", url);
  return 0;
}
