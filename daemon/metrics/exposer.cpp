// The /metrics HTTP endpoint: a small HTTP/1.x server on its own thread and io_context.
//
// Each request is read (at most 8 KiB of head, within 5 s), answered and closed: `GET /metrics` (any
// query string) gets the text exposition, `GET /` a pointer to it, anything else 404 or 405. Accepting
// goes through the proxy's own accept loop, so running out of descriptors pauses accepting instead of
// spinning, and a silent or slow client holds only its own socket for at most the timeout.
#include "metrics/exposer.hpp"

#include "net/asio.hpp"
#include "net/listener.hpp"
#include "net/spawn.hpp"

#include <boost/asio/read_until.hpp>
#include <chrono>
#include <spdlog/spdlog.h>
#include <thread>

namespace spliced::metrics {

namespace {

constexpr std::size_t max_request_head = 8192;
constexpr auto request_timeout = std::chrono::seconds(5);

std::string response(const char* status, const char* type, const std::string& body) {
    return std::string("HTTP/1.1 ") + status + "\r\nContent-Type: " + type +
           "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
}

net::awaitable<void> read_head(net::tcp::socket& s, std::string& head, boost::system::error_code& ec) {
    auto buffer = net::asio::dynamic_buffer(head, max_request_head);
    std::tie(ec, std::ignore) = co_await net::asio::async_read_until(s, buffer, "\r\n\r\n", net::use_tuple);
}

net::awaitable<void> expire(std::chrono::seconds after) {
    net::asio::steady_timer t(co_await net::asio::this_coro::executor, after);
    co_await t.async_wait(net::use_tuple);
}

net::awaitable<void> serve_one(net::tcp::socket s, const std::function<std::string()>& body) {
    using namespace net::asio::experimental::awaitable_operators;
    std::string head;
    boost::system::error_code ec;
    auto outcome = co_await (read_head(s, head, ec) || expire(request_timeout));
    if (outcome.index() == 1 || ec) co_return;  // timed out, too long, or gone: just close
    const auto line_end = head.find("\r\n");
    const std::string line = head.substr(0, line_end);
    const auto sp1 = line.find(' ');
    const auto sp2 = line.find(' ', sp1 == std::string::npos ? 0 : sp1 + 1);
    std::string reply;
    if (sp1 == std::string::npos || sp2 == std::string::npos) {
        reply = response("400 Bad Request", "text/plain", "bad request\n");
    } else {
        const std::string method = line.substr(0, sp1);
        std::string target = line.substr(sp1 + 1, sp2 - sp1 - 1);
        target = target.substr(0, target.find('?'));
        if (method != "GET" && method != "HEAD")
            reply = response("405 Method Not Allowed", "text/plain", "only GET\n");
        else if (target == "/metrics")
            reply = response("200 OK", "text/plain; version=0.0.4; charset=utf-8", body());
        else if (target == "/")
            reply = response("200 OK", "text/html", "<html><body><a href=\"/metrics\">/metrics</a></body></html>\n");
        else
            reply = response("404 Not Found", "text/plain", "not found; try /metrics\n");
        if (method == "HEAD") reply.resize(reply.find("\r\n\r\n") + 4);
    }
    auto sent = co_await (net::asio::async_write(s, net::asio::buffer(reply), net::use_tuple) ||
                          expire(request_timeout));
    (void)sent;
    boost::system::error_code ignored;
    s.shutdown(net::tcp::socket::shutdown_both, ignored);
}

}  // namespace

struct exposer::impl {
    net::asio::io_context io{1};
    net::tcp::acceptor acceptor{io};
    std::function<std::string()> body;
    std::thread thread;
};

exposer::exposer(const net::address& listen, std::function<std::string()> body) : impl_(std::make_unique<impl>()) {
    auto& d = *impl_;
    d.body = std::move(body);
    try {
        d.acceptor = net::open_listener(d.io, listen, false);
    } catch (const std::exception& e) {
        throw std::runtime_error(std::string("metrics: ") + e.what());
    }
    auto on_accept = [&d](net::tcp::socket s, bool) {
        net::spawn(d.io, serve_one(std::move(s), d.body), "metrics request");
    };
    std::function<net::admit_gate*()> no_gate = [] { return static_cast<net::admit_gate*>(nullptr); };
    net::spawn(d.io, net::accept_loop(d.acceptor, std::move(no_gate), std::move(on_accept)), "metrics accept loop");
    d.thread = std::thread([&d] { d.io.run(); });
}

exposer::~exposer() {
    auto& d = *impl_;
    net::asio::post(d.io, [&d] {
        boost::system::error_code ignored;
        d.acceptor.close(ignored);
    });
    d.io.stop();
    if (d.thread.joinable()) d.thread.join();
    boost::system::error_code ignored;
    d.acceptor.close(ignored);  // before the io_context goes (see app.cpp's stop_workers)
}

}  // namespace spliced::metrics
