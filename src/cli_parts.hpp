// What the command line's parts share (private to src/cli*.cpp): the parsed global options, a
// command's option parsing, the configuration, logger and database of a short command.
#pragma once
#include <boost/program_options.hpp>

#include <memory>
#include <stdexcept>
#include <string>
#include <unistd.h>
#include <vector>

#include "agentcron/config.hpp"
#include "agentcron/exit_code.hpp"
#include "agentcron/log.hpp"
#include "agentcron/pg_task_store.hpp"
#include "agentcron/pool.hpp"

namespace agentcron::cli_parts {

namespace po = boost::program_options;

class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Globals {
  ConfigSources sources;
  std::string command;
  bool command_given = false;     // false: `run` by default
  std::vector<std::string> args;  // the command's own arguments
};

po::variables_map parse_command(const std::string& name, const std::vector<std::string>& args,
                                const po::options_description& desc, const po::positional_options_description& pos,
                                const std::string& synopsis, bool& help);
Config load(const Globals& g);
std::unique_ptr<Logger> make_logger(const Config& c);

// A pool and store for the short administrative commands (migrate, enqueue, status).
struct AdminDb {
  explicit AdminDb(const Config& c, Logger& log)
      : pool(PoolOptions::from_config(c, "cli:" + std::to_string(::getpid())), log),
        store(pool, StoreOptions::from_config(c), log) {}
  ConnectionPool pool;
  PgTaskStore store;
};

// The admin commands (cli_admin.cpp): `tasks`, `kinds`, `schedules`.
ExitCode cmd_tasks(const Globals& g);
ExitCode cmd_kinds(const Globals& g);
ExitCode cmd_schedules(const Globals& g);
ExitCode cmd_doctor(const Globals& g);

}  // namespace agentcron::cli_parts
