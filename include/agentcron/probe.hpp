// `agentcron probe`: asks a running worker's /healthz (or /readyz) over HTTP, so that a container
// HEALTHCHECK or a script needs no curl. Kept apart from the CLI: it is the one command that
// includes cpp-httplib.
#pragma once
#include <optional>
#include <string>

#include "agentcron/duration.hpp"

namespace agentcron {

// GET http://<listen><path> (listen as metrics.listen has it: host:port; 0.0.0.0 and :: are
// asked on the loopback). nullopt when it answered 200; otherwise why not, in one line.
std::optional<std::string> probe_worker(const std::string& listen, const std::string& path, Millis timeout);

}  // namespace agentcron
