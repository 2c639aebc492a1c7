// Logging setup: the spdlog daemon log on stderr, and the one-line-per-connection access log.
#pragma once

#include "config/config.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <fmt/format.h>
#include <limits>
#include <memory>
#include <spdlog/spdlog.h>

namespace spliced::log {

// Configures the default (stderr) logger's level and pattern.
void init(const config::log_config& cfg);

// The access logger, or nullptr when `access_log: off`. Throws when the file cannot be opened.
std::shared_ptr<spdlog::logger> make_access_log(const config::log_config& cfg);

// Lets a message that could repeat for every connection through at most once per period (thread-safe).
class once_per {
public:
    explicit once_per(std::chrono::seconds period) : period_(period) {}
    // True when the caller may log now; `held_back` is then how many calls were refused since the last one.
    bool allow(std::uint64_t& held_back);

private:
    std::chrono::steady_clock::duration period_;
    std::atomic<std::chrono::steady_clock::rep> next_{std::numeric_limits<std::chrono::steady_clock::rep>::min()};
    std::atomic<std::uint64_t> held_back_{0};
};

// Lets at most `lines` messages a second through (thread-safe): a flood of events that each want a line (refused
// connections) becomes a few lines a second, each saying how many were held back before it.
class lines_per_second {
public:
    explicit lines_per_second(unsigned lines) : lines_(lines) {}
    // True when the caller may log now; `held_back` is then how many calls were refused since the last one.
    bool allow(std::uint64_t& held_back);

private:
    unsigned lines_;
    std::atomic<std::int64_t> second_{-1};  // the second the count is of (steady clock)
    std::atomic<unsigned> used_{0};
    std::atomic<std::uint64_t> held_back_{0};
};

}  // namespace spliced::log
