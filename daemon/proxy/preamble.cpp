// The connection preamble, before routing: a PROXY header to take off the stream, a ClientHello to peek at.
#include "proxy/preamble.hpp"

#include "proxy/route_table.hpp"
#include "sys/socket.hpp"

#include <cerrno>
#include <poll.h>
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
// Nothing is consumed: SO_RCVLOWAT (have + 1) keeps the readiness wait from waking for bytes already
// seen, so a slow client costs no spinning.
net::awaitable<peeked> peek_more(net::tcp::socket& s, std::vector<std::uint8_t>& buf, std::size_t have,
                                 std::size_t cap, net::asio::steady_timer& deadline) {
    const int fd = s.native_handle();
    for (bool woken = false;; woken = true) {
        buf.resize(cap);
        const ssize_t n = ::recv(fd, buf.data(), cap, MSG_PEEK | MSG_DONTWAIT);
        if (n > static_cast<ssize_t>(have)) {
            buf.resize(static_cast<std::size_t>(n));
            co_return peeked::more;
        }
        if (n == 0) co_return peeked::eof;
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) co_return peeked::error;
        if (n == static_cast<ssize_t>(have) && have > 0) {
            // Nothing new: an end (FIN) after a partial preamble also lands here.
            pollfd p{fd, POLLRDHUP, 0};
            if (::poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR))) co_return peeked::eof;
            // Woken, yet nothing new to peek: stuck at an urgent mark only if more is queued than the peek
            // shows (SO_OOBINLINE: SIOCINQ counts past the mark). Else the wake-up was an event that came
            // before this wait (a byte seen by the last peek): wait again.
            int queued = 0;
            if (woken && !sys::receive_queue_bytes(fd, queued) && queued > static_cast<int>(have))
                co_return peeked::stuck;
        }
        if (have >= cap) co_return peeked::more;  // full: the caller decides
        sys::set_rcvlowat(fd, static_cast<int>(have + 1));
        using namespace net::asio::experimental::awaitable_operators;
        auto result = co_await (s.async_wait(net::tcp::socket::wait_read, net::use_tuple) ||
                                deadline.async_wait(net::use_tuple));
        sys::set_rcvlowat(fd, 1);
        if (result.index() == 1) co_return peeked::timeout;
        auto [ec] = std::get<0>(result);
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

net::awaitable<void> read_proxy_header(net::tcp::socket& client, net::asio::steady_timer& deadline, preamble& out) {
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
    if (!discard(client.native_handle(), out.consumed)) {
        out.result = preamble::outcome::closed;
        co_return;
    }
    out.proxy = parser.header();
}

// Sets out.server_name when a complete ClientHello names one; anything else (not TLS, malformed, cut
// short, too large, too slow) leaves it unset, for the default route. A client gone before sending
// anything ends the preamble as closed.
net::awaitable<void> peek_client_hello(net::tcp::socket& client, net::asio::steady_timer& deadline, preamble& out) {
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

net::awaitable<preamble> read_preamble(net::tcp::socket& client, const listener_routes& listener) {
    preamble out;
    net::asio::steady_timer deadline(co_await net::asio::this_coro::executor, listener.handshake);
    if (listener.accept_proxy_protocol) {
        co_await read_proxy_header(client, deadline, out);
        if (out.result != preamble::outcome::ok) co_return out;
    }
    if (listener.reads_client_hello()) co_await peek_client_hello(client, deadline, out);
    co_return out;
}

}  // namespace spliced::proxy
