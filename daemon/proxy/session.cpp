// One client connection from accept to close: pick and connect a backend, engage a data path, log it.
#include "proxy/session.hpp"

#include "log/log.hpp"
#include "net/endpoint.hpp"
#include "net/upstream.hpp"
#include "proxy/preamble.hpp"
#include "proxy/route_table.hpp"
#include "sys/socket.hpp"

#include <cstring>
#include <optional>
#include <random>

namespace spliced::proxy {

void session_registry::add(entry& e) {
    e.prev_ = nullptr;
    e.next_ = head_;
    if (head_) head_->prev_ = &e;
    head_ = &e;
}

void session_registry::remove(entry& e) {
    if (e.prev_) e.prev_->next_ = e.next_;
    else if (head_ == &e) head_ = e.next_;
    if (e.next_) e.next_->prev_ = e.prev_;
    e.prev_ = e.next_ = nullptr;
}

std::size_t session_registry::cut_all() {
    std::size_t n = 0;
    for (entry* e = head_; e; e = e->next_, ++n) e->cut();  // cut() only cancels: nothing leaves the list
    return n;
}

void session_registry::report_all() {
    for (entry* e = head_; e; e = e->next_) e->report_bytes();
}

std::size_t session_registry::finish_all() {
    std::size_t n = 0;
    for (entry* e = head_; e; e = e->next_, ++n) e->finish_cut();
    return n;
}

namespace {

// Connects to a backend the pool gives (waiting in its queue when all are full), trying the next one on
// failure; counts every failure. Sets `end` when none was reached for a reason of its own.
net::awaitable<std::optional<net::tcp::socket>> connect_any(route_runtime& route, std::uint64_t id,
                                                            const client_key& client, backend_pool::lease& slot,
                                                            const char*& end) {
    std::vector<const backend_state*> tried;
    bool counted_no_up = false;
    for (std::size_t attempt = 0; attempt < route.pool->size(); ++attempt) {
        auto got = co_await route.pool->acquire(client, tried, route.cfg.timeouts.queue, counted_no_up);
        if (got.result == backend_pool::outcome::queue_timeout) {
            route.metrics.queue_timeouts.inc();
            end = "queue_timeout";
            co_return std::nullopt;
        }
        if (got.result != backend_pool::outcome::leased) break;
        // The pool that granted it: the route's newest in service, which a reload may have made since.
        auto& pool = got.slot.pool();
        const std::size_t index = got.slot.index();
        const auto& backend = pool.backend(index);
        const auto started = std::chrono::steady_clock::now();
        auto outcome = co_await net::connect_upstream(backend.addr, route.cfg.timeouts.connect);
        if (outcome.socket) {
            route.metrics.connect_time.observe(
                std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
            pool.connect_succeeded(index);
            slot = std::move(got.slot);
            co_return std::move(outcome.socket);
        }
        tried.push_back(&pool.state(index));
        pool.metrics().backends[index].connect_errors.inc(outcome.reason);
        spdlog::warn("conn {} route {}: connect to {} failed: {} ({})", id, route.cfg.name, backend.name,
                     net::to_string(outcome.reason), outcome.error.message());
        // No socket of our own after a whole connect timeout: another backend needs one just the same.
        if (outcome.reason == net::connect_error::local) break;
        pool.connect_failed(index);
    }
    co_return std::nullopt;
}

// Sockets of a proxied pair: no Nagle delay, and urgent data inline (an urgent byte is forwarded in
// order as an ordinary byte; out of line it would be dropped by copy and stall splice at its mark).
// A client socket has both from its listener (net::open_listener); an upstream socket gets them here.
void prepare(net::tcp::socket& s, bool accepted) {
    if (!accepted) {
        sys::set_nodelay(s.native_handle(), true);
        sys::set_oob_inline(s.native_handle());
    }
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

class session final : public session_registry::entry, private datapath::engage_events {
public:
    session(std::shared_ptr<const listener_routes> listener, session_env env, net::tcp::socket client,
            std::uint64_t id, bool admitted)
        : listener_(std::move(listener)), env_(env), client_(std::move(client)), upstream_(client_.get_executor()),
          id_(id), started_(std::chrono::steady_clock::now()) {
        if (admitted) admitted_ = listener_->routes.front()->admission.get();
        env_.active->fetch_add(1, std::memory_order_relaxed);
        env_.live->add(*this);
    }
    ~session() {
        finish(datapath::end_reason::shutdown, true);  // a no-op unless the session was cut short
        env_.live->remove(*this);
        slot_.reset();
        if (admitted_) admitted_->release();
        if (route_) route_->metrics.active.dec();
        env_.active->fetch_sub(1, std::memory_order_relaxed);
    }
    session(const session&) = delete;
    session& operator=(const session&) = delete;

    net::awaitable<void> run();
    void cut() override {
        cut_ = true;
        if (pair_) pair_->abort(datapath::end_reason::shutdown);
        // While in the preamble or connecting: both end within their timeouts, and run() then sees cut_.
    }
    void finish_cut() override { finish(datapath::end_reason::shutdown, true); }
    void report_bytes() override {
        if (pair_ && !finished_) report_bytes_from(nullptr, nullptr);
    }

private:
    // What the data path tells as it happens, counted on the route.
    void handed_off(datapath::kind k) override { route_->metrics.connections.inc(k); }
    void stayed_off_sockmap(datapath::fallback_reason why) override { route_->metrics.sockmap_fallbacks.inc(why); }
    void promoted() override { route_->metrics.promotions.inc(); }
    void demoted() override { route_->metrics.demotions.inc(); }

    // Ends the connection once: closes both sockets (with a reset unless it completed) and writes its
    // one access-log line. `cut_short`: it ended before its data path did.
    void finish(datapath::end_reason why, bool cut_short);
    // Ends a connection refused before it reached a backend; `end` names why in the access log.
    void refuse(const char* end, bool reset);
    bool trusted_source() const;
    // Payload received from each side so far (TCP_INFO, or the stats given), less what was already
    // added to the route's byte counters, is added now.
    void report_bytes_from(const sys::tcp_stats* from_client, const sys::tcp_stats* from_upstream);
    // The client address source_hash keys on: the accepted PROXY header's source, else the socket's peer.
    client_key balance_key(const std::optional<proxy_header>& accepted) const;
    // A place of the route's max_connections, unless the accept loop took one: waits up to timeouts.queue.
    net::awaitable<bool> admit();

    std::shared_ptr<const listener_routes> listener_;
    std::shared_ptr<route_runtime> route_;  // once chosen (after the preamble)
    session_env env_;
    net::tcp::socket client_;
    net::tcp::socket upstream_;
    std::optional<datapath::pair_state> pair_;
    std::uint64_t id_;
    std::chrono::steady_clock::time_point started_;
    std::string client_text_;
    const std::string* backend_ = nullptr;  // the address of the backend reached (in slot_'s pool)
    admission* admitted_ = nullptr;  // the limit this connection holds a place of
    backend_pool::lease slot_;       // its place on the backend: active until the session ends
    std::size_t consumed_ = 0;       // bytes of the client's stream the preamble took (a PROXY header)
    std::uint64_t reported_in_ = 0, reported_out_ = 0;  // already in spliced_bytes_total
    const char* refused_ = nullptr;  // the access log's `end` for a connection refused before a backend
    bool cut_ = false;
    bool finished_ = false;
};

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
    const std::uint64_t in = got > consumed_ ? got - consumed_ : 0;
    const std::uint64_t out = pair_->payload_received(upstream_, from_upstream->bytes_received);
    // TCP_INFO counters only grow; max() keeps a late, smaller sample from counting backwards.
    if (in > reported_in_) route_->metrics.bytes.inc(direction::in, static_cast<double>(in - reported_in_));
    if (out > reported_out_) route_->metrics.bytes.inc(direction::out, static_cast<double>(out - reported_out_));
    reported_in_ = std::max(reported_in_, in);
    reported_out_ = std::max(reported_out_, out);
}

client_key session::balance_key(const std::optional<proxy_header>& accepted) const {
    // Only source_hash reads the key: the others cost no getpeername() per connection.
    if (route_->cfg.balance != config::balance_kind::source_hash) return client_key{};
    if (accepted && accepted->has_addresses()) return client_key::of(*accepted->source);
    return client_key::of(net::peer_of(client_));
}

net::awaitable<bool> session::admit() {
    auto* limit = route_->admission.get();
    if (!limit || admitted_ == limit) co_return true;
    const auto deadline = std::chrono::steady_clock::now() + route_->cfg.timeouts.queue;
    while (!limit->try_admit()) {
        if (std::chrono::steady_clock::now() >= deadline || cut_) co_return false;
        co_await limit->wait_for_room(deadline);
    }
    admitted_ = limit;
    co_return true;
}

net::awaitable<void> session::run() {
    prepare(client_, true);
    // Only the access log needs the peer's address (one getpeername per connection otherwise).
    if (env_.access_log) client_text_ = net::peer_of(client_).text();

    std::optional<proxy_header> accepted;
    std::optional<std::string> server_name;
    if (listener_->accept_proxy_protocol || listener_->reads_client_hello()) {
        auto& counted = listener_->preamble_route();
        if (listener_->accept_proxy_protocol && !trusted_source()) {
            counted.metrics.proxy_errors.inc(proxy_protocol_error::untrusted);
            refuse("untrusted", true);
            co_return;
        }
        const preamble pre = co_await read_preamble(client_, *listener_);
        if (cut_) {
            finish(datapath::end_reason::shutdown, true);
            co_return;
        }
        if (pre.result == preamble::outcome::proxy_error) {
            counted.metrics.proxy_errors.inc(pre.proxy_reason);
            static log::once_per warning(std::chrono::seconds(10));
            if (std::uint64_t more = 0; warning.allow(more))
                spdlog::warn("conn {} {}: PROXY header refused: {} ({} more since the last warning)", id_,
                             listener_->addr.text(), to_string(pre.proxy_reason), more);
            refuse("bad_proxy_header", pre.sent_unread);
            co_return;
        }
        if (pre.result == preamble::outcome::closed) {
            refuse("client_closed", true);
            co_return;
        }
        accepted = pre.proxy;
        consumed_ = pre.consumed;
        server_name = pre.server_name;
        if (accepted && accepted->has_addresses() && env_.access_log) client_text_ = accepted->source->text();
        if (listener_->reads_client_hello()) {
            route_ = listener_->route_for(server_name);
            // The default route has no match.sni, so only a name match leads elsewhere.
            if (!route_ || route_ == listener_->fallback) listener_->metrics.sni_unmatched.inc();
            if (!route_) {
                refuse("no_route", true);
                co_return;
            }
        }
    }
    if (!route_) route_ = listener_->fallback ? listener_->fallback : listener_->routes.front();
    route_->metrics.active.inc();
    // On an address shared by several routes, the route's limit is known only now.
    if (const bool in = co_await admit(); !in) {
        if (cut_) {
            finish(datapath::end_reason::shutdown, true);
            co_return;
        }
        route_->metrics.queue_timeouts.inc();
        refuse("queue_timeout", true);
        co_return;
    }

    const char* no_backend = nullptr;
    auto upstream = co_await connect_any(*route_, id_, balance_key(accepted), slot_, no_backend);
    if (!upstream) {
        if (no_backend) refuse(no_backend, true);  // a reset: what the client sent goes nowhere
        else finish(datapath::end_reason::error, false);  // closing the client is the answer
        co_return;
    }
    upstream_ = std::move(*upstream);
    backend_ = &slot_.backend().name;
    if (cut_) {
        finish(datapath::end_reason::shutdown, true);
        co_return;
    }
    prepare(upstream_, false);
    std::vector<std::uint8_t> header;
    if (route_->cfg.send_proxy_protocol != config::proxy_protocol_version::off)
        header = proxy_header_to_send(route_->cfg.send_proxy_protocol, client_, accepted, server_name, id_);
    pair_.emplace(client_, upstream_, route_->cfg.timeouts.idle);
    pair_->consumed_from_client = consumed_;
    co_await datapath::engage(*pair_, route_->plan, env_.engine, *this, id_, route_->cfg.name, header);
    finish(pair_->reason, false);
}

void session::refuse(const char* end, bool reset) {
    refused_ = end;
    if (reset && client_.is_open()) sys::set_linger_reset(client_.native_handle());
    finish(datapath::end_reason::error, false);
}

void session::finish(datapath::end_reason why, bool cut_short) {
    if (finished_) return;
    finished_ = true;
    auto& p = pair_;
    const datapath::end_reason reason = p && !cut_short ? p->reason : why;
    sys::tcp_stats from_client, from_upstream;
    if (p) {  // payload byte counts, for the byte counters and the access log line
        sys::tcp_stats_of(client_.native_handle(), from_client);
        sys::tcp_stats_of(upstream_.native_handle(), from_upstream);
        report_bytes_from(&from_client, &from_upstream);
    }
    if (route_)
        route_->metrics.duration.observe(
            std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count());
    if (p && p->maps && env_.engine) {  // cut short while on sockmap
        env_.engine->remove(*p->maps);
        p->maps.reset();
    }
    if (reason != datapath::end_reason::completed && !refused_) {
        // Not a clean end of both streams: each peer must see a reset, never a FIN after a short stream.
        if (client_.is_open()) sys::set_linger_reset(client_.native_handle());
        if (upstream_.is_open()) sys::set_linger_reset(upstream_.native_handle());
    }
    boost::system::error_code ignored;
    client_.close(ignored);
    upstream_.close(ignored);

    const std::string& route_name = route_ ? route_->cfg.name : listener_->preamble_route().cfg.name;
    if (p && p->stranded_bytes)
        spdlog::error("conn {} route {}: {} redirected bytes never reached the peer socket; both sides reset", id_,
                      route_name, p->stranded_bytes);
    if (p && p->backlog_nudges)
        spdlog::warn("conn {} route {}: the peer's redirect backlog made no progress with an empty send queue; woken "
                     "{} time(s) ({})",
                     id_, route_name, p->backlog_nudges, p->stranded_bytes ? "in vain" : "it went on");
    if (p && p->demoted_bytes)
        spdlog::info("conn {} route {}: {} bytes copied by userspace after a sockmap demotion", id_, route_name,
                     p->demoted_bytes);
    if (!env_.access_log) return;
    const auto duration =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started_).count();
    const char* end = refused_                   ? refused_
                      : !backend_ && !cut_short ? "no_backend"
                                                : datapath::to_string(reason);
    const std::uint64_t in = p ? p->payload_received(client_, from_client.bytes_received) : 0;
    env_.access_log->info("conn={} route={} client={} backend={} datapath={} duration_ms={} bytes_in={} bytes_out={} "
                          "end={}",
                          id_, route_name, client_text_.empty() ? "?" : client_text_,
                          backend_ ? *backend_ : std::string("-"),
                          p ? p->paths.text() : std::string("-"), duration, in > consumed_ ? in - consumed_ : 0,
                          p ? p->payload_received(upstream_, from_upstream.bytes_received) : 0, end);
}

}  // namespace

route_runtime::route_runtime(config::route c, datapath::plan p, route_metrics m,
                             std::vector<std::shared_ptr<backend_state>> states, std::shared_ptr<backend_queue> queue,
                             std::shared_ptr<proxy::admission> limit)
    : cfg(std::move(c)), plan(p), metrics(std::move(m)), admission(std::move(limit)) {
    pool = std::make_shared<backend_pool>(cfg, metrics, std::move(states), std::move(queue), std::random_device{}());
}

net::awaitable<void> run_session(std::shared_ptr<const listener_routes> listener, session_env env,
                                 net::tcp::socket client, std::uint64_t id, bool admitted) {
    session s(std::move(listener), env, std::move(client), id, admitted);
    co_await s.run();
}

}  // namespace spliced::proxy
