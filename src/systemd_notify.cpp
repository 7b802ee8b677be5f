// systemd notifications through libsystemd (see systemd_notify.hpp).
#include "agentcron/systemd_notify.hpp"

#include <systemd/sd-daemon.h>

namespace agentcron {

void notify_systemd(const std::string& state) { sd_notify(0, state.c_str()); }

}  // namespace agentcron
