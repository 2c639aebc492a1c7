// systemd notifications (READY, STOPPING, WATCHDOG, STATUS); no-ops when not run by systemd.
#pragma once

#include <chrono>
#include <string>
#include <systemd/sd-daemon.h>

namespace spliced::sys {

inline void notify(const std::string& state) { ::sd_notify(0, state.c_str()); }

// Half the watchdog interval systemd asked for, or zero when it asked for none.
inline std::chrono::microseconds watchdog_period() {
    std::uint64_t usec = 0;
    if (::sd_watchdog_enabled(0, &usec) <= 0) return std::chrono::microseconds(0);
    return std::chrono::microseconds(usec / 2);
}

}  // namespace spliced::sys
