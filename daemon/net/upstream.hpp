// Connecting to one backend with a deadline.
#pragma once

#include "net/address.hpp"
#include "sys/enum_names.hpp"
#include "net/asio.hpp"

#include <chrono>
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

// Sessions (process-wide) waiting for a descriptor to open their upstream socket. While there are
// any, the accept loops hold off: a client accepted now would only take the descriptor they need.
int sessions_awaiting_descriptor();

}  // namespace spliced::net
