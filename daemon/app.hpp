// The running daemon: owns the worker io_contexts, listeners, BPF engine and metrics; start, drain, stop.
#pragma once

#include "config/config.hpp"

#include <memory>

namespace spliced {

class app {
public:
    // Sets up everything that can fail at startup (BPF, binds, metrics); throws std::runtime_error.
    explicit app(config::config cfg);
    ~app();
    // Serves until SIGTERM/SIGINT, then drains for up to drain_timeout; returns the exit code.
    int run();

private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

}  // namespace spliced
