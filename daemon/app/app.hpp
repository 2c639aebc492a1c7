// The running daemon: start (probe, routes, claims, metrics, listeners), serve until a stop signal, drain,
// stop.
#pragma once

#include "config/config.hpp"

#include <memory>

namespace spliced::app {

struct state;

class daemon {
public:
    // Sets up everything that can fail at startup (BPF, claims, binds, metrics); throws std::runtime_error.
    explicit daemon(config::config cfg);
    ~daemon();
    // Serves until SIGTERM/SIGINT, then drains for up to drain_timeout; returns the exit code.
    int run();

private:
    std::unique_ptr<state> s_;
};

}  // namespace spliced::app
