// Listening sockets (one per address and worker, SO_REUSEPORT) and the accept loop that never dies.
#pragma once

#include "net/address.hpp"
#include "net/asio.hpp"

#include <chrono>
#include <functional>

namespace spliced::net {

// Binds and listens on `addr`, with SO_REUSEPORT unless `reuse_port` is false (one socket for the
// address: a second binder fails); throws std::runtime_error naming the address.
tcp::acceptor open_listener(asio::io_context& io, const address& addr, bool reuse_port = true);

// A limit on open connections that accepting waits for (a route's max_connections).
class admit_gate {
public:
    virtual bool try_admit() = 0;
    virtual void release() = 0;
    // Returns once there may be room (or at `deadline`).
    virtual awaitable<void> wait_for_room(std::chrono::steady_clock::time_point deadline) = 0;
    // Calls `f` once, from any thread, when there may be room.
    virtual void call_when_room(std::function<void()> f) = 0;

protected:
    ~admit_gate() = default;
};

// Accepts until the acceptor is closed, handing each socket to `on_accept`. Running out of
// descriptors pauses accepting for 100 ms instead of ending the loop; while accepted sessions wait
// for a descriptor (sessions_awaiting_descriptor), it holds off in 10 ms steps. When `gate()` returns
// a gate (asked before each accept: a reload may change it), a connection is accepted only once the
// gate admits it and on_accept gets admitted = true (its session releases the place): past the
// limit, clients wait in the listen queue.
awaitable<void> accept_loop(tcp::acceptor& acceptor, std::function<admit_gate*()> gate,
                            std::function<void(tcp::socket, bool admitted)> on_accept);

}  // namespace spliced::net
