// One client connection from accept to close: admit -> preamble -> route -> connect -> engage -> finish.
#pragma once

#include "net/address.hpp"
#include "net/asio.hpp"
#include "net/core_socket.hpp"
#include "proxy/open_connections.hpp"
#include "proxy/session_registry.hpp"

#include <cstdint>
#include <memory>

namespace spdlog {
class logger;
}

namespace spliced::datapath {
struct worker_resources;
}

namespace spliced::proxy {

// What every session of one worker shares, owned by the worker and outliving all of them.
struct session_env {
    datapath::worker_resources* data = nullptr;  // the worker's event core, sockmap engine, pipes, copy buffer
    std::shared_ptr<spdlog::logger> access_log;  // null when access_log: off (a reload may open a new one)
    open_connections* open = nullptr;            // the process's open client connections, for draining
    session_registry* live = nullptr;            // this worker's open sessions
};

struct listener_routes;

// A client accepted on `listener`, in the worker's event core: `peer` is its address as accept returned it;
// `admitted`: the accept loop took a place of the listener's one route's max_connections for it.
struct accepted_client {
    std::unique_ptr<net::core_socket> socket;
    net::address peer;
    std::uint64_t id = 0;
    bool admitted = false;
};

// The session's setup coroutine; spawn it on the worker's io_context. Once the pair runs, the session lives on
// without it, and ends when the pair does.
net::awaitable<void> run_session(std::shared_ptr<const listener_routes> listener, session_env env, accepted_client client);

}  // namespace spliced::proxy
