// Connecting to one backend with a deadline.
#pragma once

#include "net/address.hpp"
#include "sys/enum_names.hpp"
#include "net/asio.hpp"
#include "net/core_socket.hpp"

#include <chrono>
#include <memory>
#include <optional>

namespace spliced::net {

// Why an upstream connect failed (the `reason` label of spliced_upstream_connect_errors_total). `local`:
// spliced could not open the socket (out of descriptors or socket memory) within the connect timeout;
// no backend was at fault.
enum class connect_error { refused, timeout, unreachable, other, local };

}  // namespace spliced::net

namespace spliced::sys {
template <>
struct enum_names<net::connect_error> {
    static constexpr std::array table{std::pair{net::connect_error::refused, "refused"},
                                      std::pair{net::connect_error::timeout, "timeout"},
                                      std::pair{net::connect_error::unreachable, "unreachable"},
                                      std::pair{net::connect_error::other, "other"},
                                      std::pair{net::connect_error::local, "local"}};
};
}  // namespace spliced::sys

namespace spliced::net {

inline const char* to_string(connect_error e) { return sys::name_of(e); }

struct connect_outcome {
    std::optional<tcp::socket> socket;  // set on success
    connect_error reason = connect_error::other;
    boost::system::error_code error;
};

// Connects to `addr`, giving up after `timeout`. Out of descriptors (or socket memory) to open the
// socket, it waits for one within `timeout`, then gives up with connect_error::local.
awaitable<connect_outcome> connect_upstream(const address& addr, std::chrono::milliseconds timeout);

struct core_connect_outcome {
    std::unique_ptr<core_socket> socket;  // set on success: connected, in the core
    connect_error reason = connect_error::other;
    boost::system::error_code error;
};

// Connects to `addr` in the calling worker's event core, giving up after `timeout`: a non-blocking socket
// (TCP_NODELAY and SO_OOBINLINE set before the connect, so the connection has them from its first byte),
// registered once; EPOLLOUT without an error means connected (no poll(), no SO_ERROR: that is read only
// when the connect failed, for the reason). Out of descriptors it waits for one as connect_upstream() does.
awaitable<core_connect_outcome> connect_in_core(event_core& core, const address& addr, std::chrono::milliseconds timeout);

// Sessions (process-wide) waiting for a descriptor to open their upstream socket. While there are
// any, the accept loops hold off: a client accepted now would only take the descriptor they need.
int sessions_awaiting_descriptor();
// Something (an accept, an upstream socket) ran out of descriptors; whether that happened within the last second.
void note_descriptor_shortage();
bool descriptors_short_lately();

}  // namespace spliced::net
