// One client connection from accept to close: pick and connect a backend, engage a data path, log it.
#pragma once

#include "config/config.hpp"
#include "datapath/engage.hpp"
#include "proxy/route_metrics.hpp"
#include "net/asio.hpp"
#include "proxy/admission.hpp"
#include "proxy/backend_pool.hpp"

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

// A route as the sessions see it: its config, the data path planned at startup, its metrics, its
// backend pool and its connection limit.
struct route_runtime {
    // `states`: one per backend, `queue`: the route's backend queue (both fresh, or carried over from an
    // earlier table); `limit`: the route's max_connections place count (carried over too), null without
    // max_connections.
    route_runtime(config::route c, datapath::plan p, route_metrics m,
                  std::vector<std::shared_ptr<backend_state>> states, std::shared_ptr<backend_queue> queue,
                  std::shared_ptr<proxy::admission> limit);
    config::route cfg;
    datapath::plan plan;
    route_metrics metrics;
    std::shared_ptr<backend_pool> pool;
    std::shared_ptr<proxy::admission> admission;  // null without max_connections
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
        // Adds the bytes moved since the last call to the route's byte counters (open connections
        // are counted periodically, not only when they end).
        virtual void report_bytes() = 0;

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
    // report_bytes() on every open session.
    void report_all();

private:
    entry* head_ = nullptr;
};

// What every session of one worker shares, owned by the app and outliving all of them.
struct session_env {
    datapath::sockmap_engine* engine = nullptr;  // null when sockmap is not loaded
    std::shared_ptr<spdlog::logger> access_log;  // null when access_log: off (a reload may open a new one)
    std::atomic<long>* active = nullptr;         // open client connections, for draining
    session_registry* live = nullptr;            // this worker's open sessions
};

struct listener_routes;

// The session coroutine; spawn it with a socket accepted on `listener`. `admitted`: the accept loop took
// a place of the listener's one route's max_connections for it.
net::awaitable<void> run_session(std::shared_ptr<const listener_routes> listener, session_env env,
                                 net::tcp::socket client, std::uint64_t id, bool admitted);

}  // namespace spliced::proxy
