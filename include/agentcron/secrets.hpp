// Secrets this process holds (the database password, from wherever the URL came): remembered
// where they are parsed, and scrubbed from every log line and error message as a last line of
// defence. No message is built with a password in the first place; this catches what a library
// might one day echo.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

namespace agentcron {

// Secrets shorter than this are not remembered: scrubbing "postgres" or "true" out of every line
// would mangle ordinary text (and JSON) and tell that the password is that word.
inline constexpr std::size_t kMinScrubbedSecret = 8;

// Remembers `secret` in every form it could be printed in (as is, JSON-escaped, percent-encoded).
void remember_secret(std::string_view secret);

// Whether `text` holds a remembered form (a cheap check before copying it to scrub).
bool holds_secret(std::string_view text);

// `text` with every remembered form replaced by ***.
std::string scrub_secrets(std::string text);

// Whether any secret is remembered (a fast check before scrubbing).
bool secrets_remembered();

}  // namespace agentcron
