// A backend for a session: picked by the route's pool (waiting in its queue when every candidate is full),
// connected with a deadline, the next one tried on failure; every failure counted and fed to passive health.
#pragma once

#include "net/asio.hpp"
#include "net/core_socket.hpp"
#include "proxy/backend_pool.hpp"
#include "proxy/route.hpp"

#include <cstdint>
#include <memory>

namespace spliced::proxy {

struct connected {
    enum class outcome { connected, queue_timeout, no_backend } result = outcome::no_backend;
    std::unique_ptr<net::core_socket> socket;  // when connected: in the worker's event core
    backend_pool::lease slot;                // its place on the backend (a pool of the route's newest table)
};

net::awaitable<connected> connect_any(net::event_core& core, route_runtime& route, std::uint64_t id,
                                     const client_key& client);

}  // namespace spliced::proxy
