// Text that may go into SQL: handler output, error messages and http replies are made valid
// UTF-8 (PostgreSQL and libpq refuse anything else) and cut to size on character boundaries,
// once, where they enter — so that one agent's bytes can fail only its own task.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

namespace agentcron {

// `in` with every invalid UTF-8 sequence (a stray continuation byte, a truncated or overlong
// sequence, a surrogate, a code point above U+10FFFF) replaced by U+FFFD and every NUL byte
// dropped: text columns cannot hold NUL.
std::string valid_utf8(std::string_view in);

// The longest prefix of valid UTF-8 `s` of at most `max_bytes` bytes that ends on a character
// boundary (never inside a multibyte sequence).
std::string_view utf8_prefix(std::string_view s, std::size_t max_bytes);
// The longest suffix of valid UTF-8 `s` of at most `max_bytes` bytes that starts on a character
// boundary.
std::string_view utf8_suffix(std::string_view s, std::size_t max_bytes);

// valid_utf8(in) cut to at most `max_bytes` on a character boundary, with "…" at the end when
// anything was cut (the marker counts against `max_bytes`).
std::string bounded_utf8(std::string_view in, std::size_t max_bytes);

// valid_utf8(in) on one line: newlines, tabs and other control characters written as \n, \t,
// \x1b…, C1 controls as \u009b… — for messages and terminals that show what a user wrote.
std::string one_line_text(std::string_view in);

// JSON text (as PostgreSQL writes it: C0 controls already escaped) with DEL and the C1 controls
// escaped too, as \u007f and \u009b…: safe to print on a terminal, and still the same JSON.
std::string terminal_json(std::string_view json);

}  // namespace agentcron
