// The connection preamble, before routing: a PROXY header to take off the stream, a ClientHello to peek at.
#pragma once

#include "net/asio.hpp"
#include "net/core_socket.hpp"
#include "proxy/client_hello.hpp"
#include "proxy/proxy_protocol.hpp"

#include <chrono>
#include <optional>
#include <string>

namespace spliced::proxy {

struct listener_routes;

struct preamble {
    enum class outcome { ok, proxy_error, closed };
    outcome result = outcome::ok;
    proxy_protocol_error proxy_reason = proxy_protocol_error::malformed;  // on proxy_error
    std::optional<proxy_header> proxy;        // the accepted PROXY header
    std::size_t consumed = 0;                 // bytes taken off the client's stream (the PROXY header)
    bool sent_unread = false;                 // the client sent bytes that will not be forwarded
    // On a listener that routes by SNI: the ClientHello's server name. Unset when it has none, or when no
    // ClientHello was read (not TLS, malformed, too large, too slow): the default route's connections.
    std::optional<std::string> server_name;
};

// Reads the preamble `listener` asks for within its handshake timeout: an accepted PROXY header is
// read and removed from the stream; a ClientHello is only peeked at (it goes to the backend as it
// came, like everything after it). A client that is not TLS, has no SNI, sends too much or is too
// slow to finish a ClientHello is not an error here: it goes to the default route.
net::awaitable<preamble> read_preamble(net::core_socket& client, const listener_routes& listener);

}  // namespace spliced::proxy
