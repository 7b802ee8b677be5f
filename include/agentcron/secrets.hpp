// Secrets this process holds (the database password, from wherever the URL came): remembered
// where they are parsed, and scrubbed from every log line and error message as a last line of
// defence. No message is built with a password in the first place; this catches what a library
// might one day echo.
#pragma once
#include <string>
#include <string_view>

namespace agentcron {

// Remembers `secret` in every form it could be printed in (as is, JSON-escaped, percent-encoded).
// Secrets shorter than 4 bytes are not remembered: scrubbing them would mangle ordinary text.
void remember_secret(std::string_view secret);

// `text` with every remembered form replaced by ***.
std::string scrub_secrets(std::string text);

// Whether any secret is remembered (a fast check before scrubbing).
bool secrets_remembered();

}  // namespace agentcron
