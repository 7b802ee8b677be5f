// Parsing, stripping and redaction of DATABASE_URL (see database_url.hpp).
#include "agentcron/database_url.hpp"

#include <libpq-fe.h>

#include <algorithm>
#include <cctype>
#include <set>

namespace agentcron {
namespace {

const std::set<std::string>& libpq_keywords() {
  static const std::set<std::string> keys = [] {
    std::set<std::string> k;
    PQconninfoOption* opts = PQconndefaults();
    for (PQconninfoOption* o = opts; o && o->keyword; ++o) k.insert(o->keyword);
    PQconninfoFree(opts);
    return k;
  }();
  return keys;
}

bool is_secret_key(std::string_view key) { return key == "password" || key == "sslpassword"; }

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// Percent-decoding. `what` names the part for the error message; a password is never echoed.
std::string percent_decode(std::string_view s, std::string_view what, bool plus_is_space = false) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%') {
      int hi = i + 2 < s.size() ? hex_value(s[i + 1]) : -1;
      int lo = i + 2 < s.size() ? hex_value(s[i + 2]) : -1;
      if (hi < 0 || lo < 0)
        throw DatabaseUrlError("database url: bad percent-encoding in the " + std::string(what));
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else if (plus_is_space && s[i] == '+') {
      out.push_back(' ');
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

std::optional<Millis> number_or_duration(const std::string& v, Millis unit) {
  if (!v.empty() && std::all_of(v.begin(), v.end(), [](unsigned char c) { return std::isdigit(c); })) {
    if (v.size() > 12) return std::nullopt;
    return unit * std::stoll(v);
  }
  return parse_duration(v);
}

// Once a password has been read, text that follows it may be a piece of it (an unencoded '&' or
// a space split it): errors name positions then, never the text.
struct Echo {
  bool after_secret = false;
  std::string operator()(const std::string& text) const {
    return after_secret ? std::string("(not shown: it follows the password)") : "\"" + text + "\"";
  }
};

// Takes a Prisma-style parameter out of the list (true) or leaves a libpq one in (false).
bool take_prisma_param(PrismaParams& p, const std::string& key, const std::string& value, const Echo& echo) {
  auto bad = [&](const char* expect) {
    return DatabaseUrlError("database url: parameter " + key + " must be " + expect + ", got " + echo(value));
  };
  if (key == "connection_limit") {
    if (value.empty() || value.size() > 9 ||
        !std::all_of(value.begin(), value.end(), [](unsigned char c) { return std::isdigit(c); }))
      throw bad("a whole number");
    p.connection_limit = std::stoi(value);
  } else if (key == "pool_timeout" || key == "connect_timeout") {
    auto d = number_or_duration(value, std::chrono::seconds(1));
    if (!d) throw bad("seconds or a duration");
    (key == "pool_timeout" ? p.pool_timeout : p.connect_timeout) = *d;
  } else if (key == "statement_timeout") {
    auto d = number_or_duration(value, Millis(1));
    if (!d) throw bad("milliseconds or a duration");
    p.statement_timeout = *d;
  } else if (key == "pgbouncer") {
    if (value == "true" || value == "1") p.pgbouncer = true;
    else if (value == "false" || value == "0") p.pgbouncer = false;
    else throw bad("true or false");
  } else if (key == "schema") {
    p.schema = value;
  } else if (key == "socket_timeout" || key == "sslaccept" || key == "sslidentity") {
    // Other Prisma-only parameters: accepted and ignored so libpq never sees them.
  } else {
    return false;
  }
  return true;
}

void add_param(DatabaseUrl& url, std::string key, std::string value, Echo& echo) {
  if (take_prisma_param(url.prisma, key, value, echo)) return;
  if (!libpq_keywords().count(key))
    throw DatabaseUrlError("database url: unknown connection parameter " + echo(key));
  if (is_secret_key(key)) echo.after_secret = true;
  url.set(std::move(key), std::move(value));
}

bool is_host_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || std::string_view(".-_%:,[]").find(c) != std::string_view::npos;
}

bool is_known_param(std::string_view name) {
  static const std::set<std::string_view> prisma = {"connection_limit", "pool_timeout", "connect_timeout",
                                                    "statement_timeout", "pgbouncer", "schema", "socket_timeout",
                                                    "sslaccept", "sslidentity"};
  return prisma.count(name) || libpq_keywords().count(std::string(name));
}

// Whether `text` holds a query parameter ("?name=" or "&name=" with a known name).
bool has_query_param(std::string_view text) {
  for (std::size_t i = text.find_first_of("?&"); i != std::string_view::npos; i = text.find_first_of("?&", i + 1)) {
    std::size_t eq = text.find('=', i + 1);
    if (eq != std::string_view::npos && is_known_param(text.substr(i + 1, eq - i - 1))) return true;
  }
  return false;
}

}  // namespace

std::size_t url_userinfo_end(std::string_view rest) {
  // The last '@' that is followed by a host list and preceded by a user name without / ? #: a
  // password may hold any character unencoded, '@' included. Taking the last one can only make
  // the password too long (when an unencoded '@' follows in the path or a parameter value), never
  // show a piece of it as a host, a database or a parameter.
  for (std::size_t at = rest.rfind('@'); at != std::string_view::npos;
       at = at == 0 ? std::string_view::npos : rest.rfind('@', at - 1)) {
    std::string_view after = rest.substr(at + 1);
    std::string_view hosts = after.substr(0, after.find_first_of("/?"));
    if (!std::all_of(hosts.begin(), hosts.end(), is_host_char)) continue;
    std::string_view userinfo = rest.substr(0, at);
    std::string_view user = userinfo.substr(0, userinfo.find(':'));
    if (user.find_first_of("/?#") != std::string_view::npos) continue;
    return at;
  }
  return std::string_view::npos;
}

namespace {

std::string quote_conninfo_value(std::string_view v) {
  std::string out = "'";
  for (char c : v) {
    if (c == '\'' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  out.push_back('\'');
  return out;
}

// host[:port] list of a URL; IPv6 addresses in brackets; %2F-encoded socket directories.
void parse_hosts(DatabaseUrl& url, std::string_view hostspec) {
  if (hostspec.empty()) return;
  std::string hosts, ports;
  bool any_port = false;
  std::size_t start = 0;
  while (start <= hostspec.size()) {
    std::size_t comma = hostspec.find(',', start);
    if (comma == std::string_view::npos) comma = hostspec.size();
    std::string_view item = hostspec.substr(start, comma - start);
    std::string host, port;
    if (!item.empty() && item.front() == '[') {
      std::size_t close = item.find(']');
      if (close == std::string_view::npos)
        throw DatabaseUrlError("database url: unterminated [ in host \"" + std::string(item) + "\"");
      host = std::string(item.substr(1, close - 1));
      std::string_view rest = item.substr(close + 1);
      if (!rest.empty()) {
        if (rest.front() != ':')
          throw DatabaseUrlError("database url: unexpected text after ] in host \"" + std::string(item) + "\"");
        port = std::string(rest.substr(1));
      }
    } else {
      std::size_t colon = item.rfind(':');
      if (colon != std::string_view::npos) {
        host = percent_decode(item.substr(0, colon), "host");
        port = std::string(item.substr(colon + 1));
      } else {
        host = percent_decode(item, "host");
      }
    }
    if (!port.empty() &&
        (!std::all_of(port.begin(), port.end(), [](unsigned char c) { return std::isdigit(c); }) ||
         port.size() > 5 || std::stoi(port) == 0 || std::stoi(port) > 65535))
      throw DatabaseUrlError("database url: bad port \"" + port + "\"");
    if (!hosts.empty() || start > 0) { hosts += ','; ports += ','; }
    hosts += host;
    ports += port;
    any_port = any_port || !port.empty();
    start = comma + 1;
  }
  url.set("host", hosts);
  if (any_port) url.set("port", ports);
}

DatabaseUrl parse_uri(std::string_view text) {
  DatabaseUrl url;
  Echo echo;
  std::string_view rest = text.substr(text.find("://") + 3);
  if (std::size_t at = url_userinfo_end(rest); at != std::string_view::npos) {
    std::string_view userinfo = rest.substr(0, at);
    rest = rest.substr(at + 1);
    if (has_query_param(userinfo))
      // "…?application_name=ops@site" or a password holding "?sslmode=": either reading may be
      // wrong, and the wrong one would show a piece of the password. Nothing of it is repeated.
      throw DatabaseUrlError(
          "database url: an '@' follows the parameters; percent-encode '@' in parameter values (%40) "
          "and '?' in the password (%3F)");
    std::size_t colon = userinfo.find(':');
    std::string user = percent_decode(userinfo.substr(0, colon), "user name");
    if (!user.empty()) url.set("user", user);
    if (colon != std::string_view::npos) {
      url.set("password", percent_decode(userinfo.substr(colon + 1), "password"));
    }
  } else if (rest.find('@') != std::string_view::npos) {
    // An '@' that ends no user info: a password or user name with characters that must be
    // percent-encoded. Nothing of it is repeated here.
    throw DatabaseUrlError(
        "database url: cannot tell the user name and password from the host; percent-encode "
        "'/', '?', '#' and '@' in them (%2F, %3F, %23, %40)");
  }
  std::size_t qpos = rest.find('?');
  std::string_view query = qpos == std::string_view::npos ? std::string_view{} : rest.substr(qpos + 1);
  rest = rest.substr(0, qpos);
  std::size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  std::string_view path = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash + 1);
  parse_hosts(url, authority);
  if (!path.empty()) url.set("dbname", percent_decode(path, "database name"));
  while (!query.empty()) {
    std::size_t amp = query.find('&');
    std::string_view item = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    if (item.empty()) continue;
    std::size_t eq = item.find('=');
    if (eq == std::string_view::npos)
      throw DatabaseUrlError("database url: parameter " + echo(std::string(item)) + " has no value");
    std::string key = percent_decode(item.substr(0, eq), "parameter name");
    std::string value = percent_decode(item.substr(eq + 1), "value of " + (echo.after_secret ? "a parameter" : key), true);
    add_param(url, std::move(key), std::move(value), echo);
  }
  return url;
}

DatabaseUrl parse_conninfo(std::string_view text) {
  DatabaseUrl url;
  Echo echo;
  std::size_t i = 0;
  auto skip_space = [&] { while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i; };
  while (true) {
    skip_space();
    if (i >= text.size()) break;
    std::size_t k = i;
    while (i < text.size() && text[i] != '=' && !std::isspace(static_cast<unsigned char>(text[i]))) ++i;
    std::string key(text.substr(k, i - k));
    skip_space();
    if (i >= text.size() || text[i] != '=')
      throw DatabaseUrlError("database url: missing \"=\" after " + echo(key) + " in connection string");
    ++i;
    skip_space();
    std::string value;
    if (i < text.size() && text[i] == '\'') {
      ++i;
      bool closed = false;
      while (i < text.size()) {
        char c = text[i++];
        if (c == '\\' && i < text.size()) value.push_back(text[i++]);
        else if (c == '\'') { closed = true; break; }
        else value.push_back(c);
      }
      if (!closed) throw DatabaseUrlError("database url: unterminated quoted value for " + echo(key));
    } else {
      while (i < text.size() && !std::isspace(static_cast<unsigned char>(text[i]))) {
        char c = text[i++];
        if (c == '\\' && i < text.size()) c = text[i++];
        value.push_back(c);
      }
    }
    add_param(url, std::move(key), std::move(value), echo);
  }
  return url;
}

bool is_uri(std::string_view t) {
  return t.starts_with("postgres://") || t.starts_with("postgresql://");
}

// The length of a URL scheme ("name://") at the start of `t`, 0 when there is none: a "://"
// further in (inside a quoted conninfo value, say) makes no URL.
std::size_t scheme_length(std::string_view t) {
  std::size_t i = 0;
  while (i < t.size() && (std::isalnum(static_cast<unsigned char>(t[i])) || t[i] == '+' || t[i] == '.' || t[i] == '-')) ++i;
  return i > 0 && std::isalpha(static_cast<unsigned char>(t[0])) && t.substr(i).starts_with("://") ? i : 0;
}

}  // namespace

std::optional<std::string> DatabaseUrl::get(std::string_view key) const {
  for (const auto& [k, v] : params)
    if (k == key) return v;
  return std::nullopt;
}

void DatabaseUrl::set(std::string key, std::string value) {
  for (auto& [k, v] : params)
    if (k == key) { v = std::move(value); return; }
  params.emplace_back(std::move(key), std::move(value));
}

std::string DatabaseUrl::conninfo() const {
  std::string out;
  for (const auto& [k, v] : params) {
    if (!out.empty()) out += ' ';
    out += k + '=' + quote_conninfo_value(v);
  }
  return out;
}

std::string DatabaseUrl::redacted() const {
  std::string out;
  for (const auto& [k, v] : params) {
    if (!out.empty()) out += ' ';
    out += k + '=' + (is_secret_key(k) ? std::string("***") : quote_conninfo_value(v));
  }
  return out;
}

DatabaseUrl parse_database_url(std::string_view text) {
  if (std::size_t n = scheme_length(text); n > 0 && !is_uri(text))
    throw DatabaseUrlError("database url: scheme must be postgres:// or postgresql://, got \"" +
                           std::string(text.substr(0, n)) + "://\"");
  return is_uri(text) ? parse_uri(text) : parse_conninfo(text);
}

namespace {

// The query of a URL that parses, with the value of every password parameter (however spelled:
// %70assword is password) masked — and the items after it that are no known parameter, which an
// unencoded '&' split from it.
std::string redact_query(std::string_view query) {
  std::string out;
  bool in_secret = false;
  while (true) {
    std::size_t amp = query.find('&');
    std::string_view item = query.substr(0, amp);
    std::size_t eq = item.find('=');
    std::string key;
    try {
      key = percent_decode(item.substr(0, eq), "parameter name");
    } catch (const DatabaseUrlError&) {
    }
    bool known = eq != std::string_view::npos && is_known_param(key);
    if (known) in_secret = is_secret_key(key);
    if (known || !in_secret) {
      if (!out.empty()) out += '&';
      out += known && in_secret ? std::string(item.substr(0, eq)) + "=***" : std::string(item);
    }
    if (amp == std::string_view::npos) return out;
    query = query.substr(amp + 1);
  }
}

}  // namespace

std::string redact_database_url(std::string_view text) {
  std::string s(text);
  if (std::size_t scheme = scheme_length(s); scheme > 0) {
    std::size_t start = scheme + 3;
    // A URL that does not parse may be split anywhere: nothing after the scheme is shown.
    try {
      parse_uri(s);
    } catch (const DatabaseUrlError&) {
      return s.substr(0, start) + "***";
    }
    std::string out = s.substr(0, start);
    std::string_view rest = std::string_view(s).substr(start);
    if (std::size_t at = url_userinfo_end(rest); at != std::string_view::npos) {
      // user:SECRET@ — the secret runs from the first ':' of the user info to its '@'.
      std::string_view userinfo = rest.substr(0, at);
      std::size_t colon = userinfo.find(':');
      out += std::string(userinfo.substr(0, colon)) + (colon == std::string_view::npos ? "" : ":***") + "@";
      rest = rest.substr(at + 1);
    }
    std::size_t q = rest.find('?');
    out += rest.substr(0, q);
    if (q != std::string_view::npos) out += "?" + redact_query(rest.substr(q + 1));
    return out;
  }
  try {
    return parse_conninfo(s).redacted();
  } catch (const DatabaseUrlError&) {
    // Not parseable: mask everything from the first password keyword on.
    std::size_t pos = s.find("password");
    if (pos != std::string::npos) s.replace(pos, std::string::npos, "password=***");
    return s;
  }
}

std::string percent_encode(std::string_view s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

std::string redact_url(std::string_view url) {
  std::size_t scheme = url.find("://");
  std::size_t start = scheme == std::string_view::npos ? 0 : scheme + 3;
  std::string out(url.substr(0, start));
  std::string_view rest = url.substr(start);
  // Everything up to the last '@' is userinfo (an unencoded '@' or '/' in a password included);
  // cutting too much only hides more.
  if (std::size_t at = rest.rfind('@'); at != std::string_view::npos) {
    out += "***@";
    rest = rest.substr(at + 1);
  }
  std::size_t q = rest.find_first_of("?#");
  out += rest.substr(0, q);
  if (q != std::string_view::npos) out += "?***";
  return out;
}

}  // namespace agentcron
