// Signal dispositions that keep the daemon's blocking system calls whole.
#pragma once

#include <initializer_list>

namespace spliced::sys {

// Adds SA_RESTART to the handlers now installed for `signals` (Asio installs its signal_set handler
// without it), so that a signal arriving during a blocking connect(), accept(), read() or write()
// -- the sockmap probe's self-test, a log write -- restarts the call instead of failing it with
// EINTR. Returns false if a sigaction() call failed.
bool restart_interrupted_calls(std::initializer_list<int> signals);

}  // namespace spliced::sys
