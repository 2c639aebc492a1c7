// Active health checks: one loop per backend of a route, all on one io_context (not per worker).
#pragma once

#include "config/config.hpp"
#include "net/asio.hpp"

#include <memory>
#include <string>
#include <vector>

namespace spliced::proxy {

class backend_pool;

struct check_outcome {
    bool passed = false;
    std::string why;  // when it failed: "connect: Connection refused", "reply did not start with expect", ...
};

// One check of `target`: a TCP connect, then `send` and a reply that starts with `expect` when they are
// given, all within `check.timeout`.
net::awaitable<check_outcome> check_once(const net::address& target, const config::health_check& check);

// The active checks of one pool's backends, every `check.interval`, reporting to the pool: from its
// construction (a backend checked alike before keeps its schedule; any other is checked at once) until
// it is destroyed, which the next route table's checks replace. Made and destroyed on `io`'s thread;
// the checks hold no reference to the pool while they wait.
class health_checks {
public:
    health_checks(net::asio::io_context& io, const std::shared_ptr<backend_pool>& pool, const config::health_check& check);
    ~health_checks();
    health_checks(const health_checks&) = delete;
    health_checks& operator=(const health_checks&) = delete;

    struct shared;  // what the check loops share with this handle

private:
    std::shared_ptr<shared> shared_;
};

}  // namespace spliced::proxy
