// libFuzzer target for the configuration loader: any file either loads or is a ConfigError (one
// line naming where), and `config check` renders whatever loaded. No other exception, no crash.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "agentcron/config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::string path = "/tmp/agentcron-config-fuzz-" + std::to_string(::getpid()) + ".toml";
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  agentcron::ConfigSources sources;
  sources.file = path;
  sources.default_file = "/nonexistent";
  try {
    agentcron::Config c = agentcron::load_config(sources);
    agentcron::describe_config(c);
  } catch (const agentcron::ConfigError& e) {
    std::string what = e.what();
    if (what.empty() || what.find('\n') != std::string::npos) {
      std::fprintf(stderr, "a config error that is not one line: %s\n", what.c_str());
      std::abort();
    }
  }
  return 0;
}
