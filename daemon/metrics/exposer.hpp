// The /metrics HTTP endpoint: a small HTTP/1.x server on its own thread and io_context, so that scrapes
// never wait for the proxy and the proxy never waits for a scrape.
#pragma once

#include "config/config.hpp"

#include <functional>
#include <memory>
#include <string>

namespace spliced::metrics {

class exposer {
public:
    // Binds `listen` (throws std::runtime_error naming it when it cannot) and serves `GET /metrics`
    // with what `body()` returns (called on the endpoint's thread, once per scrape).
    exposer(const net::address& listen, std::function<std::string()> body);
    ~exposer();  // stops the thread; open scrapes are closed
    exposer(const exposer&) = delete;
    exposer& operator=(const exposer&) = delete;

private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

}  // namespace spliced::metrics
