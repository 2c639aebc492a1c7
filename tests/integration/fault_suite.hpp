// What the fault suite's runner and its cases share: the run's settings (suite.hpp) and the end of each case.
#pragma once

#include "suite.hpp"

#include <string>

namespace it {

// After each case: on failure, prints the tail of the log of the daemon the case started and keeps its temporary
// directory; then stops that daemon (SIGKILL) if it is still running.
void end_fault_case(const std::string& name, bool failed);

}  // namespace it
