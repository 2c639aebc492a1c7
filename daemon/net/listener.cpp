// Listening sockets (one per address and worker, SO_REUSEPORT) and the accept loop that never dies.
#include "net/listener.hpp"

#include "net/endpoint.hpp"
#include "net/upstream.hpp"
#include "sys/socket.hpp"

#include <boost/asio/detail/socket_option.hpp>
#include <chrono>
#include <optional>
#include <spdlog/spdlog.h>
#include <stdexcept>
#include <sys/socket.h>

namespace spliced::net {

tcp::acceptor open_listener(asio::io_context& io, const address& addr, bool reuse_port) {
    using reuse_port_option = asio::detail::socket_option::boolean<SOL_SOCKET, SO_REUSEPORT>;
    auto ep = to_endpoint(addr);
    tcp::acceptor acceptor(io);
    boost::system::error_code ec;
    acceptor.open(ep.protocol(), ec);
    if (!ec) acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec && reuse_port) acceptor.set_option(reuse_port_option(true), ec);
    if (!ec && ep.address().is_v6()) acceptor.set_option(asio::ip::v6_only(true), ec);
    if (!ec) acceptor.bind(ep, ec);
    if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
    // Every accepted socket inherits these from its listener (the kernel clones the listening socket),
    // which saves two setsockopt() calls per connection: no Nagle delay, and urgent data inline (an
    // urgent byte is forwarded in order as an ordinary byte; out of line it would be dropped by copy
    // and stall splice at its mark).
    if (!ec && sys::set_nodelay(acceptor.native_handle(), true))
        ec = boost::system::error_code(errno, boost::system::system_category());
    if (!ec && sys::set_oob_inline(acceptor.native_handle()))
        ec = boost::system::error_code(errno, boost::system::system_category());
    if (ec) throw std::runtime_error("cannot listen on " + addr.text() + ": " + ec.message());
    return acceptor;
}

awaitable<void> accept_loop(tcp::acceptor& acceptor, std::function<admit_gate*()> gate_of,
                            std::function<void(tcp::socket, bool admitted)> on_accept) {
    using clock = std::chrono::steady_clock;
    asio::steady_timer pause(co_await asio::this_coro::executor);
    // Out of descriptors, the pending connection stays in the listen queue (its client waits) and
    // the listener stays readable: retrying at once would spin. Warned at most every 10 s, with the
    // number of pauses since, not at every retry.
    std::optional<clock::time_point> last_warning;
    unsigned pauses = 0;
    while (acceptor.is_open()) {
        if (sessions_awaiting_descriptor() > 0) {
            // Clients already in wait for a descriptor for their upstream: let them have the next
            // ones that free up, or accepted clients would pile up holding one each and no backend.
            pause.expires_after(std::chrono::milliseconds(10));
            co_await pause.async_wait(use_tuple);
            continue;
        }
        boost::system::error_code ec;
        tcp::socket socket(acceptor.get_executor());
        admit_gate* gate = gate_of();
        if (gate) {
            // Admitted only once a client is there: a place taken while waiting in accept would be
            // kept from the other workers' listeners.
            std::tie(ec) = co_await acceptor.async_wait(tcp::acceptor::wait_read, use_tuple);
            if (!ec && gate != gate_of()) continue;  // a reload changed the limit while we waited
            if (!ec && !gate->try_admit()) {
                co_await gate->wait_for_room(clock::now() + std::chrono::seconds(1));
                continue;
            }
            if (!ec) {
                acceptor.non_blocking(true, ec);
                if (!ec) acceptor.accept(socket, ec);
                if (ec) gate->release();
            }
            if (ec == asio::error::would_block || ec == asio::error::try_again) continue;
        } else {
            std::tie(ec, socket) = co_await acceptor.async_accept(use_tuple);
        }
        if (!ec) {
            on_accept(std::move(socket), gate != nullptr);
            continue;
        }
        if (ec == asio::error::operation_aborted || !acceptor.is_open()) break;
        if (ec == asio::error::no_descriptors || ec.value() == ENFILE || ec == asio::error::no_buffer_space ||
            ec == asio::error::no_memory) {
            const auto now = clock::now();
            if (!last_warning || now - *last_warning >= std::chrono::seconds(10)) {
                spdlog::warn("accept: {}; pausing accepts for 100 ms at a time, clients wait in the listen queue "
                             "({} pauses since the last warning)",
                             ec.message(), pauses);
                last_warning = now;
                pauses = 0;
            }
            ++pauses;
            pause.expires_after(std::chrono::milliseconds(100));
            co_await pause.async_wait(use_tuple);
            continue;
        }
        // ECONNABORTED and friends: the client gave up while queued; keep accepting.
        spdlog::debug("accept: {}", ec.message());
    }
}

}  // namespace spliced::net
