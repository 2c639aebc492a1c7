// Listening sockets (one per address and worker, SO_REUSEPORT) and the accept loop that never dies.
#pragma once

#include "config/config.hpp"
#include "net/asio.hpp"

#include <functional>

namespace spliced::net {

// Binds and listens on `addr` with SO_REUSEPORT; throws std::runtime_error naming the address.
tcp::acceptor open_listener(asio::io_context& io, const config::address& addr);

// Accepts until the acceptor is closed, handing each socket to `on_accept`. Running out of
// descriptors pauses accepting for 100 ms instead of ending the loop; while accepted sessions wait
// for a descriptor (sessions_awaiting_descriptor), it holds off in 10 ms steps.
awaitable<void> accept_loop(tcp::acceptor& acceptor, std::function<void(tcp::socket)> on_accept);

}  // namespace spliced::net
