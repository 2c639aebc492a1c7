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

// Connects to `addr`, giving up after `timeout`. Out of descriptors (or socket memory) to open the
// socket, it waits for one within `timeout`, then gives up with connect_error::local.
awaitable<connect_outcome> connect_upstream(const config::address& addr, std::chrono::milliseconds timeout);

// Sessions (process-wide) waiting for a descriptor to open their upstream socket. While there are
// any, the accept loops hold off: a client accepted now would only take the descriptor they need.
int sessions_awaiting_descriptor();

}  // namespace spliced::net
