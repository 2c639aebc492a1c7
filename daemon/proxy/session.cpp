// One client connection from accept to close: admit -> preamble -> route -> connect -> engage -> finish.
#include "proxy/session.hpp"

#include "datapath/engage.hpp"
#include "datapath/sockmap.hpp"
#include "log/log.hpp"
#include "net/endpoint.hpp"
#include "proxy/access_log.hpp"
#include "proxy/connector.hpp"
#include "proxy/preamble.hpp"
#include "proxy/route_table.hpp"
#include "sys/socket.hpp"

#include <optional>

namespace spliced::proxy {

namespace {

// Sockets of a proxied pair: no Nagle delay, and urgent data inline (an urgent byte is forwarded in
// order as an ordinary byte; out of line it would be dropped by copy and stall splice at its mark).
// A client socket has both from its listener (net::open_listener); an upstream socket gets them here.
void prepare_client(net::tcp::socket& s) {
    if (!s.non_blocking()) s.non_blocking(true);
}
void prepare_upstream(net::tcp::socket& s) {
    sys::set_nodelay(s.native_handle(), true);
    sys::set_oob_inline(s.native_handle());
    if (!s.non_blocking()) s.non_blocking(true);
}

// The addresses a PROXY header sent upstream names: those of the accepted header, else the client socket's.
std::vector<std::uint8_t> proxy_header_to_send(config::proxy_protocol_version version, const net::tcp::socket& client,
                                               const std::optional<proxy_header>& accepted,
                                               const std::optional<std::string>& server_name, std::uint64_t id) {
    const bool from_header = accepted && accepted->has_addresses();
    const net::address src = from_header ? *accepted->source : net::peer_of(client);
    const net::address dst = from_header ? *accepted->destination : net::local_of(client);
    if (src.empty() || dst.empty()) return {};
    if (version == config::proxy_protocol_version::v1) return encode_v1(src, dst);
    const std::string unique = std::to_string(id);
    return encode_v2(src, dst, server_name.value_or(""),
                     std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(unique.data()), unique.size()));
}

// How a step ends the session: the access log's `end`, and whether the peers get a reset (anything but a
// clean end of both streams does; a refused PROXY header with nothing unread may be closed plainly).
struct ending {
    session_end end;
    bool reset = true;
};

class session final : public session_registry::entry, private datapath::engage_events {
public:
    session(std::shared_ptr<const listener_routes> listener, session_env env, net::tcp::socket client,
            std::uint64_t id, bool admitted)
        : listener_(std::move(listener)), env_(env), client_(std::move(client)), upstream_(client_.get_executor()),
          id_(id), started_(std::chrono::steady_clock::now()) {
        if (admitted) admitted_ = listener_->routes.front()->admission.get();
        env_.open->opened();
        env_.live->add(*this);
    }
    ~session() {
        finish({session_end::shutdown});  // a no-op unless the session was cut short
        env_.live->remove(*this);
        slot_.reset();
        if (admitted_) admitted_->release();
        if (route_) route_->metrics.active.dec();
        env_.open->closed();
    }
    session(const session&) = delete;
    session& operator=(const session&) = delete;

    net::awaitable<void> run() {
        prepare_client(client_);
        // Only the access log needs the peer's address (one getpeername per connection otherwise).
        if (env_.access_log)
            if (const auto peer = net::peer_of(client_); !peer.empty()) client_text_ = peer.text();  // else "?"
        std::optional<ending> stop = co_await route_by_preamble();
        if (!stop) stop = co_await admit();
        if (!stop) stop = co_await connect();
        if (stop) co_return finish(*stop);
        co_await relay();
        finish({ended_as(pair_->reason), pair_->reason != datapath::end_reason::completed});
    }
    void cut() override {
        cut_ = true;
        if (pair_) pair_->abort(datapath::end_reason::shutdown);
        // While in the preamble or connecting: both end within their timeouts, and run() then sees cut_.
    }
    void finish_cut() override { finish({session_end::shutdown}); }
    void report_bytes() override {
        if (pair_ && !finished_) report_bytes_from(nullptr, nullptr);
    }

private:
    // What the data path tells as it happens, counted on the route.
    void handed_off(datapath::kind k) override { route_->metrics.connections.inc(k); }
    void stayed_off_sockmap(datapath::fallback_reason why) override { route_->metrics.sockmap_fallbacks.inc(why); }
    void promoted() override { route_->metrics.promotions.inc(); }
    void demoted() override { route_->metrics.demotions.inc(); }

    net::awaitable<std::optional<ending>> route_by_preamble();
    net::awaitable<std::optional<ending>> admit();
    net::awaitable<std::optional<ending>> connect();
    net::awaitable<void> relay();
    // Ends the connection once: closes both sockets (with a reset unless `e` says otherwise) and writes its
    // one access-log line.
    void finish(ending e);
    void log_sockmap_notes(const std::string& route) const;
    bool trusted_source() const;
    // Payload received from each side so far (TCP_INFO, or the stats given), less what was already
    // added to the route's byte counters, is added now.
    void report_bytes_from(const sys::tcp_stats* from_client, const sys::tcp_stats* from_upstream);
    // The client address source_hash keys on: the accepted PROXY header's source, else the socket's peer.
    client_key balance_key() const;

    std::shared_ptr<const listener_routes> listener_;
    std::shared_ptr<route_runtime> route_;  // once chosen (after the preamble)
    session_env env_;
    net::tcp::socket client_;
    net::tcp::socket upstream_;
    std::optional<datapath::pair_state> pair_;
    std::uint64_t id_;
    std::chrono::steady_clock::time_point started_;
    std::string client_text_;
    std::optional<proxy_header> accepted_;   // the PROXY header the client sent, if its route takes one
    std::optional<std::string> server_name_;  // the ClientHello's SNI, if one was read
    std::size_t consumed_ = 0;  // bytes of the client's stream the preamble took (a PROXY header), for the pair
    admission* admitted_ = nullptr;          // the limit this connection holds a place of
    backend_pool::lease slot_;               // its place on the backend: active until the session ends
    std::uint64_t reported_in_ = 0, reported_out_ = 0;  // already in spliced_bytes_total
    bool cut_ = false;
    bool finished_ = false;
};

net::awaitable<std::optional<ending>> session::route_by_preamble() {
    if (listener_->accept_proxy_protocol || listener_->reads_client_hello()) {
        auto& counted = listener_->preamble_route();
        if (listener_->accept_proxy_protocol && !trusted_source()) {
            counted.metrics.proxy_errors.inc(proxy_protocol_error::untrusted);
            co_return ending{session_end::untrusted};
        }
        const preamble pre = co_await read_preamble(client_, *listener_);
        if (cut_) co_return ending{session_end::shutdown};
        if (pre.result == preamble::outcome::proxy_error) {
            counted.metrics.proxy_errors.inc(pre.proxy_reason);
            static log::once_per warning(std::chrono::seconds(10));
            if (std::uint64_t more = 0; warning.allow(more))
                spdlog::warn("conn {} {}: PROXY header refused: {} ({} more since the last warning)", id_,
                             listener_->addr.text(), to_string(pre.proxy_reason), more);
            co_return ending{session_end::bad_proxy_header, pre.sent_unread};
        }
        if (pre.result == preamble::outcome::closed) co_return ending{session_end::client_closed};
        accepted_ = pre.proxy;
        consumed_ = pre.consumed;
        server_name_ = pre.server_name;
        if (accepted_ && accepted_->has_addresses() && env_.access_log) client_text_ = accepted_->source->text();
        if (listener_->reads_client_hello()) {
            route_ = listener_->route_for(server_name_);
            // The default route has no match.sni, so only a name match leads elsewhere.
            if (!route_ || route_ == listener_->fallback) listener_->metrics.sni_unmatched.inc();
            if (!route_) co_return ending{session_end::no_route};
        }
    }
    if (!route_) route_ = listener_->fallback ? listener_->fallback : listener_->routes.front();
    route_->metrics.active.inc();
    co_return std::nullopt;
}

// A place of the route's max_connections, unless the accept loop took one: waits up to timeouts.queue (on an
// address shared by several routes, the route's limit is known only now).
net::awaitable<std::optional<ending>> session::admit() {
    auto* limit = route_->admission.get();
    if (!limit || admitted_ == limit) co_return std::nullopt;
    const auto deadline = std::chrono::steady_clock::now() + route_->cfg.timeouts.queue;
    while (!limit->try_admit()) {
        if (cut_) co_return ending{session_end::shutdown};
        if (std::chrono::steady_clock::now() >= deadline) {
            route_->metrics.queue_timeouts.inc();
            co_return ending{session_end::queue_timeout};
        }
        co_await limit->wait_for_room(deadline);
    }
    admitted_ = limit;
    co_return std::nullopt;
}

net::awaitable<std::optional<ending>> session::connect() {
    auto c = co_await connect_any(*route_, id_, balance_key());
    if (c.result == connected::outcome::queue_timeout) co_return ending{session_end::queue_timeout};
    if (c.result == connected::outcome::no_backend) co_return ending{session_end::no_backend};
    upstream_ = std::move(*c.socket);
    slot_ = std::move(c.slot);
    if (cut_) co_return ending{session_end::shutdown};
    co_return std::nullopt;
}

net::awaitable<void> session::relay() {
    prepare_upstream(upstream_);
    std::vector<std::uint8_t> header;
    if (route_->cfg.send_proxy_protocol != config::proxy_protocol_version::off)
        header = proxy_header_to_send(route_->cfg.send_proxy_protocol, client_, accepted_, server_name_, id_);
    pair_.emplace(client_, upstream_, route_->cfg.timeouts.idle);
    pair_->consumed_from_client = consumed_;
    co_await datapath::engage(*pair_, route_->plan, env_.engine, *this, id_, route_->cfg.name, header);
}

bool session::trusted_source() const {
    if (listener_->trusted_proxies.empty()) return true;
    const net::address peer = net::peer_of(client_);
    if (peer.empty()) return false;
    for (const auto& network : listener_->trusted_proxies)
        if (network.contains(peer)) return true;
    return false;
}

void session::report_bytes_from(const sys::tcp_stats* from_client, const sys::tcp_stats* from_upstream) {
    sys::tcp_stats c, u;
    if (!from_client) {
        if (sys::tcp_stats_of(client_.native_handle(), c) || sys::tcp_stats_of(upstream_.native_handle(), u)) return;
        from_client = &c;
        from_upstream = &u;
    }
    const std::uint64_t got = pair_->payload_received(client_, from_client->bytes_received);
    const std::uint64_t consumed = pair_->consumed_from_client;
    const std::uint64_t in = got > consumed ? got - consumed : 0;
    const std::uint64_t out = pair_->payload_received(upstream_, from_upstream->bytes_received);
    // TCP_INFO counters only grow; max() keeps a late, smaller sample from counting backwards.
    if (in > reported_in_) route_->metrics.bytes.inc(direction::in, static_cast<double>(in - reported_in_));
    if (out > reported_out_) route_->metrics.bytes.inc(direction::out, static_cast<double>(out - reported_out_));
    reported_in_ = std::max(reported_in_, in);
    reported_out_ = std::max(reported_out_, out);
}

client_key session::balance_key() const {
    // Only source_hash reads the key: the others cost no getpeername() per connection.
    if (route_->cfg.balance != config::balance_kind::source_hash) return client_key{};
    if (accepted_ && accepted_->has_addresses()) return client_key::of(*accepted_->source);
    return client_key::of(net::peer_of(client_));
}

void session::finish(ending e) {
    if (finished_) return;
    finished_ = true;
    auto& p = pair_;
    sys::tcp_stats from_client, from_upstream;
    if (p) {  // payload byte counts, for the byte counters and the access log line
        sys::tcp_stats_of(client_.native_handle(), from_client);
        sys::tcp_stats_of(upstream_.native_handle(), from_upstream);
        report_bytes_from(&from_client, &from_upstream);
    }
    const auto lasted = std::chrono::steady_clock::now() - started_;
    if (route_) route_->metrics.duration.observe(std::chrono::duration<double>(lasted).count());
    if (p && p->maps && env_.engine) {  // cut short while on sockmap
        env_.engine->remove(*p->maps);
        p->maps.reset();
    }
    if (e.reset) {
        // Not a clean end of both streams: each peer must see a reset, never a FIN after a short stream.
        if (client_.is_open()) sys::set_linger_reset(client_.native_handle());
        if (upstream_.is_open()) sys::set_linger_reset(upstream_.native_handle());
    }
    boost::system::error_code ignored;
    client_.close(ignored);
    upstream_.close(ignored);

    const std::string& route_name = route_ ? route_->cfg.name : listener_->preamble_route().cfg.name;
    if (p) log_sockmap_notes(route_name);
    if (!env_.access_log) return;
    const std::uint64_t in = p ? p->payload_received(client_, from_client.bytes_received) : 0;
    write(*env_.access_log,
          access_record{id_, route_name, client_text_.empty() ? "?" : client_text_, slot_ ? slot_.backend().name : "-",
                        p ? p->paths.text() : "-", std::chrono::duration_cast<std::chrono::milliseconds>(lasted).count(),
                        p && in > p->consumed_from_client ? in - p->consumed_from_client : 0,
                        p ? p->payload_received(upstream_, from_upstream.bytes_received) : 0, e.end});
}

void session::log_sockmap_notes(const std::string& route) const {
    const auto& p = *pair_;
    if (p.stranded_bytes)
        spdlog::error("conn {} route {}: {} redirected bytes never reached the peer socket; both sides reset", id_, route,
                      p.stranded_bytes);
    if (p.backlog_nudges)
        spdlog::warn("conn {} route {}: the peer's redirect backlog made no progress with an empty send queue; woken "
                     "{} time(s) ({})",
                     id_, route, p.backlog_nudges, p.stranded_bytes ? "in vain" : "it went on");
    if (p.demoted_bytes)
        spdlog::info("conn {} route {}: {} bytes copied by userspace after a sockmap demotion", id_, route,
                     p.demoted_bytes);
}

}  // namespace

net::awaitable<void> run_session(std::shared_ptr<const listener_routes> listener, session_env env,
                                 net::tcp::socket client, std::uint64_t id, bool admitted) {
    session s(std::move(listener), env, std::move(client), id, admitted);
    co_await s.run();
}

}  // namespace spliced::proxy
