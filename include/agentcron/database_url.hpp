// DATABASE_URL: parses postgres:// URLs and libpq key=value strings, takes out the Prisma-style
// pool parameters users already carry, and renders what libpq needs — or a redacted copy.
#pragma once
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "agentcron/duration.hpp"

namespace agentcron {

// A malformed URL or conninfo. The message never contains the password.
class DatabaseUrlError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The parameters Prisma, Supabase and friends put in DATABASE_URL that libpq would reject.
// agentcron honours them (they map onto database.* and timeouts.* keys) and strips them.
struct PrismaParams {
  std::optional<int> connection_limit;
  std::optional<Millis> pool_timeout;       // plain numbers are seconds (Prisma)
  std::optional<Millis> connect_timeout;    // plain numbers are seconds (libpq, Prisma)
  std::optional<Millis> statement_timeout;  // plain numbers are milliseconds (PostgreSQL)
  std::optional<bool> pgbouncer;
  std::optional<std::string> schema;  // accepted and ignored: agentcron's tables live in `agentcron`
};

struct DatabaseUrl {
  // libpq keywords and values, in the order given (host, port, user, password, dbname, …).
  std::vector<std::pair<std::string, std::string>> params;
  PrismaParams prisma;

  std::optional<std::string> get(std::string_view key) const;
  void set(std::string key, std::string value);  // replaces or appends
  // A libpq key=value conninfo string, quoted as libpq expects. Contains the password.
  std::string conninfo() const;
  // The same with the password (and any other secret) replaced by ***.
  std::string redacted() const;
};

// Parses a postgres:// or postgresql:// URL, or a libpq key=value string. An empty string is
// valid (libpq's defaults and PG* environment variables apply). Throws DatabaseUrlError.
DatabaseUrl parse_database_url(std::string_view text);

// In the text after "scheme://", the position of the '@' that ends the user info, or npos: the
// last '@' followed by a host list and preceded by a user name without / ? # (a password may
// hold any character unencoded) and by no query parameter.
std::size_t url_userinfo_end(std::string_view rest);

// Renders any URL or conninfo string with its password replaced by ***, even one that does not
// parse. The only way agentcron ever shows a connection string.
std::string redact_database_url(std::string_view text);

// Every byte of `s` but the unreserved ones (A–Z a–z 0–9 - . _ ~) as %XX: how a password is
// written into a URL.
std::string percent_encode(std::string_view s);

// Any scheme://… URL with its userinfo replaced by *** and its query and fragment by ?*** (an
// http handler's URL may carry tokens there): how errors, logs and `config check` show one.
std::string redact_url(std::string_view url);

}  // namespace agentcron
