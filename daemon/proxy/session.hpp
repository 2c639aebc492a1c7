// One client connection from accept to close: pick and connect a backend, hand off to a data path.
#pragma once

#include "config/config.hpp"
#include "datapath/datapath.hpp"
#include "metrics/metrics.hpp"
#include "net/asio.hpp"
#include "proxy/balancer.hpp"

#include <atomic>
#include <cstdint>
#include <memory>

namespace spdlog {
class logger;
}

namespace spliced::datapath {
class sockmap_engine;
}

namespace spliced::proxy {

// A route as the sessions see it: its config, the data path chosen at startup, its metrics.
struct route_runtime {
    route_runtime(config::route c, datapath::kind k, metrics::route_metrics m)
        : cfg(std::move(c)), path(k), metrics(std::move(m)), balancer(cfg.backends.size()) {}
    config::route cfg;
    datapath::kind path;
    // datapath auto with sockmap usable: connections start on splice and move to sockmap once
    // they are not bulk transfers (run_splice_promotable).
    bool promote_to_sockmap = false;
    metrics::route_metrics metrics;
    round_robin balancer;
};

// What every session shares, owned by the app and outliving all sessions.
struct session_env {
    datapath::sockmap_engine* engine = nullptr;  // null when sockmap is not loaded
    spdlog::logger* access_log = nullptr;        // null when access_log: off
    std::atomic<long>* active = nullptr;         // open client connections, for draining
};

// The session coroutine; spawn it with the accepted socket.
net::awaitable<void> run_session(std::shared_ptr<route_runtime> route, session_env env, net::tcp::socket client,
                                 std::uint64_t id);

}  // namespace spliced::proxy
