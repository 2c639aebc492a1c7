// One client connection from accept to close: admit -> preamble -> route -> connect -> engage -> finish.
#pragma once

#include "net/asio.hpp"
#include "proxy/open_connections.hpp"
#include "proxy/session_registry.hpp"

#include <cstdint>
#include <memory>

namespace spdlog {
class logger;
}

namespace spliced::datapath {
class sockmap_engine;
}

namespace spliced::proxy {

// What every session of one worker shares, owned by the app and outliving all of them.
struct session_env {
    datapath::sockmap_engine* engine = nullptr;  // null when sockmap is not loaded
    std::shared_ptr<spdlog::logger> access_log;  // null when access_log: off (a reload may open a new one)
    open_connections* open = nullptr;            // the process's open client connections, for draining
    session_registry* live = nullptr;            // this worker's open sessions
};

struct listener_routes;

// The session coroutine; spawn it with a socket accepted on `listener`. `admitted`: the accept loop took
// a place of the listener's one route's max_connections for it.
net::awaitable<void> run_session(std::shared_ptr<const listener_routes> listener, session_env env,
                                 net::tcp::socket client, std::uint64_t id, bool admitted);

}  // namespace spliced::proxy
