// The connection preamble, before routing: a PROXY header to take off the stream, a ClientHello to peek at.
#include "proxy/preamble.hpp"

#include "proxy/route_table.hpp"
#include "sys/socket.hpp"

#include <cerrno>
#include <sys/socket.h>
#include <vector>

namespace spliced::proxy {

namespace {

// How much the ClientHello peek may see in all: the 16 KiB message plus the headers of the records it
// is cut into (a hello in tiny records past this is treated as too large).
constexpr std::size_t max_hello_bytes = 64 * 1024;

// `stuck`: readable, yet a peek shows nothing new: an urgent mark, where recv() stops while bytes are
// queued past it. No valid preamble has one.
enum class peeked { more, eof, error, timeout, stuck };

// Waits until the client has more than `have` bytes queued, then peeks up to `cap` of them into `buf`.
// Nothing is consumed. The socket's registration is edge-triggered: a peek that shows nothing new clears
// its readiness, and the next arrival sets it again, so a slow client costs no spinning.
net::awaitable<peeked> peek_more(net::core_socket& s, std::vector<std::uint8_t>& buf, std::size_t have,
                                 std::size_t cap, std::chrono::steady_clock::time_point deadline) {
    for (;;) {
        buf.resize(cap);
        const ssize_t n = ::recv(s.fd(), buf.data(), cap, MSG_PEEK | MSG_DONTWAIT);
        if (n > static_cast<ssize_t>(have)) {
            buf.resize(static_cast<std::size_t>(n));
            co_return peeked::more;
        }
        if (n == 0) co_return peeked::eof;
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) co_return peeked::error;
        if (n == static_cast<ssize_t>(have) && have > 0) {
            // Nothing new: an end (FIN) after a partial preamble, or an urgent mark the peek stops at.
            if (s.failed()) co_return peeked::error;
            if (s.peer_closed() || s.hung_up()) co_return peeked::eof;
            if (s.urgent()) co_return peeked::stuck;
        }
        if (have >= cap) co_return peeked::more;  // full: the caller decides
        s.read_drained();                          // everything queued has been seen
        auto [ec] = co_await s.async_wait(EPOLLIN, deadline, net::use_tuple);
        if (ec == net::asio::error::timed_out) co_return peeked::timeout;
        if (ec) co_return peeked::error;
    }
}

// Takes `n` bytes (already queued: they were peeked) off the stream.
bool discard(int fd, std::size_t n) {
    std::vector<std::uint8_t> sink(n);
    std::size_t got = 0;
    while (got < n) {
        const ssize_t r = ::recv(fd, sink.data() + got, n - got, MSG_DONTWAIT);
        if (r > 0) got += static_cast<std::size_t>(r);
        else if (r < 0 && errno == EINTR) continue;
        else return false;
    }
    return true;
}

net::awaitable<void> read_proxy_header(net::core_socket& client, std::chrono::steady_clock::time_point deadline,
                                      preamble& out) {
    proxy_header_parser parser;
    std::vector<std::uint8_t> buf;
    std::size_t have = 0;
    auto refuse = [&out](proxy_protocol_error reason, bool sent_unread) {
        out.result = preamble::outcome::proxy_error;
        out.proxy_reason = reason;
        out.sent_unread = sent_unread;
    };
    for (;;) {
        const auto seen = co_await peek_more(client, buf, have, max_v2_header, deadline);
        if (seen != peeked::more) {
            refuse(seen == peeked::timeout ? proxy_protocol_error::timeout
                   : seen == peeked::stuck ? proxy_protocol_error::malformed
                                           : proxy_protocol_error::closed,
                   have > 0 || seen == peeked::timeout);
            co_return;
        }
        const auto r = parser.feed(std::span<const std::uint8_t>(buf).subspan(have));
        have = buf.size();
        if (r.status == parse_status::invalid) {
            refuse(r.reason, true);
            co_return;
        }
        if (r.status == parse_status::done) break;
        if (have >= max_v2_header) {  // the parser decides too_large first; belt and braces
            refuse(proxy_protocol_error::too_large, true);
            co_return;
        }
    }
    out.consumed = parser.header_size();
    if (!discard(client.fd(), out.consumed)) {
        out.result = preamble::outcome::closed;
        co_return;
    }
    out.proxy = parser.header();
}

// Sets out.server_name when a complete ClientHello names one; anything else (not TLS, malformed, cut
// short, too large, too slow) leaves it unset, for the default route. A client gone before sending
// anything ends the preamble as closed.
net::awaitable<void> peek_client_hello(net::core_socket& client, std::chrono::steady_clock::time_point deadline,
                                      preamble& out) {
    client_hello_parser parser;
    std::vector<std::uint8_t> buf;
    std::size_t have = 0;
    for (;;) {
        const auto seen = co_await peek_more(client, buf, have, max_hello_bytes, deadline);
        if (seen == peeked::error || (seen == peeked::eof && have == 0)) {
            out.result = preamble::outcome::closed;
            co_return;
        }
        if (seen != peeked::more) co_return;  // timeout, cut short or stuck at an urgent mark
        const auto r = parser.feed(std::span<const std::uint8_t>(buf).subspan(have));
        have = buf.size();
        if (r.status == parse_status::done) {
            out.server_name = parser.hello().server_name;
            co_return;
        }
        if (r.status == parse_status::invalid || have >= max_hello_bytes) co_return;
    }
}

}  // namespace

net::awaitable<preamble> read_preamble(net::core_socket& client, const listener_routes& listener) {
    preamble out;
    const auto deadline = std::chrono::steady_clock::now() + listener.handshake;
    if (listener.accept_proxy_protocol) {
        co_await read_proxy_header(client, deadline, out);
        if (out.result != preamble::outcome::ok) co_return out;
    }
    if (listener.reads_client_hello()) co_await peek_client_hello(client, deadline, out);
    co_return out;
}

}  // namespace spliced::proxy
