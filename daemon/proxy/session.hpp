// One client connection from accept to close: pick and connect a backend, engage a data path, log it.
#pragma once

#include "config/config.hpp"
#include "datapath/engage.hpp"
#include "metrics/metrics.hpp"
#include "net/asio.hpp"
#include "proxy/balancer.hpp"

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace spdlog {
class logger;
}

namespace spliced::datapath {
class sockmap_engine;
}

namespace spliced::proxy {

// A route as the sessions see it: its config, the data path planned at startup, its metrics.
struct route_runtime {
    route_runtime(config::route c, datapath::plan p, metrics::route_metrics m)
        : cfg(std::move(c)), plan(p), metrics(std::move(m)) {}
    config::route cfg;
    datapath::plan plan;
    metrics::route_metrics metrics;
};

// The sessions of one worker thread that are still open, so that a drain timeout can end them.
// Used from that worker's thread only (or, once it has stopped, from the thread that stopped it).
class session_registry {
public:
    // What the registry knows of a session.
    class entry {
    public:
        // Asks the session to end now, as cut short: it resets both sides and logs `end=shutdown`.
        virtual void cut() = 0;
        // The same, done at once: for sessions left when the worker has stopped and runs nothing.
        virtual void finish_cut() = 0;

    protected:
        ~entry() = default;

    private:
        friend class session_registry;
        entry* prev_ = nullptr;
        entry* next_ = nullptr;
    };
    void add(entry& e);
    void remove(entry& e);
    // cut() on every open session; returns how many there were.
    std::size_t cut_all();
    // finish_cut() on every open session; returns how many there were.
    std::size_t finish_all();

private:
    entry* head_ = nullptr;
};

// What every session of one worker shares, owned by the app and outliving all of them.
struct session_env {
    datapath::sockmap_engine* engine = nullptr;  // null when sockmap is not loaded
    spdlog::logger* access_log = nullptr;        // null when access_log: off
    std::atomic<long>* active = nullptr;         // open client connections, for draining
    session_registry* live = nullptr;            // this worker's open sessions
};

struct listener_routes;

// The session coroutine; spawn it with a socket accepted on `listener`.
net::awaitable<void> run_session(std::shared_ptr<const listener_routes> listener, session_env env,
                                 net::tcp::socket client, std::uint64_t id);

}  // namespace spliced::proxy
