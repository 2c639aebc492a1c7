// Connecting to one backend with a deadline.
#pragma once

#include "config/config.hpp"
#include "metrics/metrics.hpp"
#include "net/asio.hpp"

#include <chrono>
#include <optional>

namespace spliced::net {

struct connect_outcome {
    std::optional<tcp::socket> socket;  // set on success
    metrics::connect_error reason = metrics::connect_error::other;
    boost::system::error_code error;
};

// Connects to `addr`, giving up after `timeout`.
awaitable<connect_outcome> connect_upstream(const config::address& addr, std::chrono::milliseconds timeout);

}  // namespace spliced::net
