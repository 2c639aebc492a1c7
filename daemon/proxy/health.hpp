// Active health checks: one loop per backend of a route, all on one io_context (not per worker).
#pragma once

#include "config/config.hpp"
#include "net/asio.hpp"

#include <memory>
#include <string>

namespace spliced::proxy {

class backend_pool;

struct check_outcome {
    bool passed = false;
    std::string why;  // when it failed: "connect: Connection refused", "reply did not start with expect", ...
};

// One check of `target`: a TCP connect, then `send` and a reply that starts with `expect` when they are
// given, all within `check.timeout`.
net::awaitable<check_outcome> check_once(const config::address& target, const config::health_check& check);

// Checks every backend of `pool` every `check.interval` (the first at once), reporting to the pool,
// until `io` stops or the pool is retired.
void start_health_checks(net::asio::io_context& io, const std::shared_ptr<backend_pool>& pool,
                         const config::health_check& check);

}  // namespace spliced::proxy
