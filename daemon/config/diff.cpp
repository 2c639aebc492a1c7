// What a reload changes: the settings that need a restart keep their running values.
#include "config/diff.hpp"

namespace spliced::config {

std::vector<std::string> keep_restart_only(const config& running, config& next) {
    std::vector<std::string> kept;
    if (next.workers != running.workers) {
        kept.push_back("workers changed (" + std::to_string(running.workers) + " -> " + std::to_string(next.workers) +
                       "): needs a restart; keeping " + std::to_string(running.workers));
        next.workers = running.workers;
    }
    if (next.sockmap.capacity != running.sockmap.capacity) {
        kept.push_back("sockmap.capacity changed (" + std::to_string(running.sockmap.capacity) + " -> " +
                       std::to_string(next.sockmap.capacity) + "): needs a restart; keeping " +
                       std::to_string(running.sockmap.capacity));
        next.sockmap.capacity = running.sockmap.capacity;
    }
    if (next.metrics.enabled != running.metrics.enabled ||
        (next.metrics.enabled && next.metrics.listen != running.metrics.listen)) {
        kept.push_back("metrics.listen changed: needs a restart; keeping " +
                       (running.metrics.enabled ? running.metrics.listen.text() : std::string("no metrics endpoint")));
        next.metrics = running.metrics;
    }
    return kept;
}

}  // namespace spliced::config
