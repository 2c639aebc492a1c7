// Signal dispositions that keep the daemon's blocking system calls whole.
#include "sys/signals.hpp"

#include <csignal>

namespace spliced::sys {

bool restart_interrupted_calls(std::initializer_list<int> signals) {
    bool ok = true;
    for (int sig : signals) {
        struct sigaction sa {};
        if (::sigaction(sig, nullptr, &sa) != 0) {
            ok = false;
            continue;
        }
        if (sa.sa_handler == SIG_IGN || sa.sa_handler == SIG_DFL || (sa.sa_flags & SA_RESTART)) continue;
        sa.sa_flags |= SA_RESTART;
        if (::sigaction(sig, &sa, nullptr) != 0) ok = false;
    }
    return ok;
}

}  // namespace spliced::sys
