// Secrets for leak tests: random passwords with the characters that break URLs, the URL shapes
// they are embedded in, and the oracle that finds any form of a password in some output.
#pragma once
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "agentcron/database_url.hpp"

namespace agentcron::testing {

// The first form of `secret` found in `output`: the secret, its percent-encoding, or any piece of
// 4 bytes, except pieces that `baseline` (the same output for another secret) holds anyway.
inline std::optional<std::string> find_leak(std::string_view output, const std::string& secret,
                                            std::string_view baseline = {}) {
  if (secret.empty()) return std::nullopt;
  if (output.find(secret) != std::string_view::npos) return "the password";
  std::string enc = percent_encode(secret);
  if (output.find(enc) != std::string_view::npos) return "the percent-encoded password";
  for (std::size_t i = 0; i + 4 <= secret.size(); ++i) {
    std::string piece = secret.substr(i, 4);
    if (output.find(piece) != std::string_view::npos && baseline.find(piece) == std::string_view::npos)
      return "the piece \"" + piece + "\" of the password";
  }
  return std::nullopt;
}

// Random passwords of 10 to 24 characters, each with at least one of / ? # @ : (and no '%', which
// a raw URL cannot tell from an encoding).
class PasswordGenerator {
 public:
  // digits = false: no digits, so that no piece can match a timestamp or a pid of a log line.
  explicit PasswordGenerator(unsigned seed, bool digits = true) : rng_(seed) {
    for (char ch : std::string("abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ/?#@:&=+!$^*()[]{};,.~-_' \"\\"))
      chars_.emplace_back(1, ch);
    if (digits)
      for (char ch : std::string("23456789")) chars_.emplace_back(1, ch);
    for (const char* u : {"\xC3\xA9", "\xE6\x97\xA5", "\xF0\x9F\x94\x91"}) chars_.emplace_back(u);
  }
  std::string next() {
    const auto& chars = chars_;
    static const std::string breakers = "/?#@:";
    std::uniform_int_distribution<std::size_t> len(10, 24), pick(0, chars.size() - 1), brk(0, breakers.size() - 1);
    std::string pw;
    std::size_t n = len(rng_);
    for (std::size_t i = 0; i < n; ++i) pw += chars[pick(rng_)];
    std::uniform_int_distribution<std::size_t> pos(0, pw.size());
    std::size_t at = pos(rng_);
    while (at < pw.size() && (static_cast<unsigned char>(pw[at]) & 0xC0) == 0x80) ++at;  // not inside a character
    pw.insert(at, 1, breakers[brk(rng_)]);
    return pw;
  }

 private:
  std::mt19937 rng_;
  std::vector<std::string> chars_;
};

// How a password is written into a connection string.
enum class UrlShape { raw_uri, encoded_uri, ipv6_uri, several_hosts_uri, query_password, quoted_conninfo };
inline constexpr UrlShape kUrlShapes[] = {UrlShape::raw_uri,           UrlShape::encoded_uri,
                                          UrlShape::ipv6_uri,          UrlShape::several_hosts_uri,
                                          UrlShape::query_password,    UrlShape::quoted_conninfo};

inline std::string conninfo_quote(std::string_view v) {
  std::string out = "'";
  for (char c : v) {
    if (c == '\'' || c == '\\') out += '\\';
    out += c;
  }
  return out + "'";
}

// A connection string for `user` with `password` at host:port/db in the given shape.
inline std::string url_with_password(UrlShape shape, const std::string& user, const std::string& password,
                                     const std::string& host, int port, const std::string& db) {
  std::string p = std::to_string(port);
  switch (shape) {
    case UrlShape::raw_uri: return "postgres://" + user + ":" + password + "@" + host + ":" + p + "/" + db + "?sslmode=disable";
    case UrlShape::encoded_uri: return "postgresql://" + user + ":" + percent_encode(password) + "@" + host + ":" + p + "/" + db;
    case UrlShape::ipv6_uri: return "postgres://" + user + ":" + percent_encode(password) + "@[::1]:" + p + "," + host + ":" + p + "/" + db;
    case UrlShape::several_hosts_uri:
      return "postgres://" + user + ":" + password + "@" + host + ":" + p + "," + host + ":" + p + "/" + db + "?connect_timeout=3&application_name=leaktest";
    case UrlShape::query_password:
      return "postgres://" + user + "@" + host + ":" + p + "/" + db + "?password=" + percent_encode(password) + "&sslmode=disable";
    case UrlShape::quoted_conninfo:
      return "host=" + host + " port=" + p + " user=" + user + " password=" + conninfo_quote(password) + " dbname=" + db;
  }
  return {};
}

}  // namespace agentcron::testing
