// systemd readiness protocol: READY=1, RELOADING=1, STOPPING=1 and STATUS= (a no-op when not
// run by systemd, i.e. without $NOTIFY_SOCKET).
#pragma once
#include <string>

namespace agentcron {

void notify_systemd(const std::string& state);

}  // namespace agentcron
