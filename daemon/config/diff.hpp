// What a reload changes: the settings that need a restart keep their running values (each said in a warning).
#pragma once

#include "config/config.hpp"

#include <string>
#include <vector>

namespace spliced::config {

// Gives `next` the running values of what a reload cannot change (workers, sockmap.capacity, the metrics
// endpoint) and returns a warning for each that differed.
std::vector<std::string> keep_restart_only(const config& running, config& next);

}  // namespace spliced::config
