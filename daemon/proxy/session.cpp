// One client connection from accept to close: admit -> preamble -> route -> connect -> engage -> finish.
#include "proxy/session.hpp"

#include "datapath/pair.hpp"
#include "log/log.hpp"
#include "net/endpoint.hpp"
#include "proxy/access_log.hpp"
#include "proxy/connector.hpp"
#include "proxy/preamble.hpp"
#include "proxy/route_table.hpp"
#include "proxy/source_acl.hpp"
#include "sys/socket.hpp"

#include <optional>

namespace spliced::proxy {

namespace {

// The addresses a PROXY header sent upstream names: those of the accepted header, else the client socket's.
std::vector<std::uint8_t> proxy_header_to_send(config::proxy_protocol_version version, const net::address& peer,
                                               int client_fd, const std::optional<proxy_header>& accepted,
                                               const std::optional<std::string>& server_name, std::uint64_t id) {
    const bool from_header = accepted && accepted->has_addresses();
    const net::address src = from_header ? *accepted->source : peer;
    const net::address dst = from_header ? *accepted->destination : net::local_of(client_fd);
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
    bool logged = true;  // in the access log (a refused connection is not)
};

class session final : public session_registry::entry, public net::retirable, private datapath::pair_owner {
public:
    session(std::shared_ptr<const listener_routes> listener, session_env env, accepted_client client)
        : listener_(std::move(listener)), env_(env), client_(std::move(client.socket)), peer_(client.peer),
          id_(client.id), started_(std::chrono::steady_clock::now()) {
        if (client.admitted) admitted_ = listener_->routes.front()->admission.get();
        env_.open->opened();
        env_.live->add(*this);
    }
    ~session() override {
        finish({session_end::shutdown});  // a no-op unless the session was cut short
        pair_.reset();
        env_.live->remove(*this);
        slot_.reset();
        if (admitted_) admitted_->release();
        if (route_) route_->metrics.active.dec();
        env_.open->closed();
    }
    session(const session&) = delete;
    session& operator=(const session&) = delete;

    // Everything before the pair runs; afterwards running() says whether the pair took the session over.
    net::awaitable<void> setup() {
        // Only the access log needs the peer's address as text.
        if (env_.access_log && !peer_.empty()) client_text_ = peer_.text();  // else "?"
        std::optional<ending> stop = co_await route_by_preamble();
        if (!stop) stop = judge_source();
        if (!stop) stop = co_await admit();
        if (!stop) stop = co_await connect();
        if (stop) co_return finish(*stop);
        engage();
    }
    bool running() const { return pair_ && !finished_; }
    // From now on the session ends (and is destroyed, at the end of the core's turn) when its pair does.
    void owned_by_pair() { owned_by_pair_ = true; }

    void cut() override {
        cut_ = true;
        if (pair_) return pair_->abort(datapath::end_reason::shutdown);
        // While in the preamble: its wait ends now. Queued or connecting: within their timeouts.
        client_->cancel();
    }
    void finish_cut() override {
        finish({session_end::shutdown});
        if (owned_by_pair_) delete this;
    }
    void report_bytes() override {
        if (!pair_ || finished_) return;
        std::uint64_t in = 0, out = 0;
        pair_->bytes_so_far(in, out);
        count_bytes(in, out);
    }

private:
    // What the pair tells as it happens, counted on the route.
    void handed_off(datapath::kind k) override { route_->metrics.connections.inc(k); }
    void stayed_off_sockmap(datapath::fallback_reason why) override { route_->metrics.sockmap_fallbacks.inc(why); }
    void promoted() override { route_->metrics.promotions.inc(); }
    void demoted() override { route_->metrics.demotions.inc(); }
    void pair_ended() override {
        if (finished_) return;  // finish() ended the pair: whoever called it decides what comes next
        const auto reason = pair_->report().reason;
        finish({ended_as(reason), reason != datapath::end_reason::completed});
        if (owned_by_pair_) env_.data->core.retire(this);
    }

    net::awaitable<std::optional<ending>> route_by_preamble();
    // The route's allow and deny lists: a refused client is reset before a backend is tried.
    std::optional<ending> judge_source();
    net::awaitable<std::optional<ending>> admit();
    net::awaitable<std::optional<ending>> connect();
    void engage();
    // Ends the connection once: closes both sockets (with a reset unless `e` says otherwise) and writes its
    // one access-log line.
    void finish(ending e);
    void log_sockmap_notes(const datapath::pair_report& r, const std::string& route) const;
    bool trusted_source() const;
    // What is left of timeouts.lifetime (counted from the accept) when the pair starts; 0: no limit.
    std::chrono::milliseconds lifetime_left() const;
    // Adds the payload bytes received from each side so far, less what is already counted, to the route's byte
    // counters.
    void count_bytes(std::uint64_t in, std::uint64_t out);
    // The original client: the accepted PROXY header's source, else the socket's peer.
    const net::address& client_address() const;
    // The client address source_hash keys on.
    client_key balance_key() const;

    std::shared_ptr<const listener_routes> listener_;
    std::shared_ptr<route_runtime> route_;  // once chosen (after the preamble)
    session_env env_;
    std::unique_ptr<net::core_socket> client_;
    std::unique_ptr<net::core_socket> upstream_;
    std::optional<datapath::pair> pair_;
    net::address peer_;
    std::uint64_t id_;
    std::chrono::steady_clock::time_point started_;
    std::string client_text_;
    std::optional<proxy_header> accepted_;   // the PROXY header the client sent, if its route takes one
    std::optional<std::string> server_name_;  // the ClientHello's SNI, if one was read
    std::size_t consumed_ = 0;  // bytes of the client's stream the preamble took (a PROXY header)
    admission* admitted_ = nullptr;          // the limit this connection holds a place of
    backend_pool::lease slot_;               // its place on the backend: active until the session ends
    std::uint64_t reported_in_ = 0, reported_out_ = 0;  // already in spliced_bytes_total
    bool cut_ = false;
    bool finished_ = false;
    bool owned_by_pair_ = false;
};

net::awaitable<std::optional<ending>> session::route_by_preamble() {
    if (listener_->accept_proxy_protocol || listener_->reads_client_hello()) {
        auto& counted = listener_->preamble_route();
        if (listener_->accept_proxy_protocol && !trusted_source()) {
            counted.metrics.proxy_errors.inc(proxy_protocol_error::untrusted);
            co_return ending{session_end::untrusted};
        }
        const preamble pre = co_await read_preamble(*client_, *listener_);
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

std::optional<ending> session::judge_source() {
    const net::address& client = client_address();
    if (admits(route_->cfg, client)) return std::nullopt;
    route_->metrics.refused.inc(refusal::acl);
    if (std::uint64_t more = 0; route_->refusal_log.allow(more))
        spdlog::info("conn {} route {}: client {} refused by allow/deny ({} more refused connections not logged)", id_,
                     route_->cfg.name, client.empty() ? std::string("?") : client.text(), more);
    return ending{session_end::refused, true, false};
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
    auto c = co_await connect_any(env_.data->core, *route_, id_, balance_key());
    if (c.result == connected::outcome::queue_timeout) co_return ending{session_end::queue_timeout};
    if (c.result == connected::outcome::no_backend) co_return ending{session_end::no_backend};
    upstream_ = std::move(c.socket);
    slot_ = std::move(c.slot);
    if (cut_) co_return ending{session_end::shutdown};
    co_return std::nullopt;
}

void session::engage() {
    std::vector<std::uint8_t> header;
    if (route_->cfg.send_proxy_protocol != config::proxy_protocol_version::off)
        header = proxy_header_to_send(route_->cfg.send_proxy_protocol, peer_, client_->fd(), accepted_, server_name_, id_);
    if (const auto& k = route_->cfg.keepalive)
        for (int fd : {client_->fd(), upstream_->fd()})
            sys::set_keepalive(fd, static_cast<int>(k->idle.count()), static_cast<int>(k->interval.count()),
                               static_cast<int>(k->count));
    const datapath::pair_settings settings{route_->plan, route_->cfg.timeouts.idle, consumed_, id_, route_->cfg.name,
                                           lifetime_left()};
    pair_.emplace(*env_.data, *client_, *upstream_, settings, static_cast<datapath::pair_owner&>(*this));
    pair_->engage(header);
}

std::chrono::milliseconds session::lifetime_left() const {
    const auto lifetime = route_->cfg.timeouts.lifetime;
    if (lifetime.count() == 0) return lifetime;
    const auto lived = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started_);
    return std::max(std::chrono::milliseconds(1), lifetime - lived);
}

bool session::trusted_source() const {
    if (listener_->trusted_proxies.empty()) return true;
    if (peer_.empty()) return false;
    for (const auto& network : listener_->trusted_proxies)
        if (network.contains(peer_)) return true;
    return false;
}

void session::count_bytes(std::uint64_t in, std::uint64_t out) {
    // Counts only grow; max() keeps a late, smaller sample from counting backwards.
    if (in > reported_in_) route_->metrics.bytes.inc(direction::in, static_cast<double>(in - reported_in_));
    if (out > reported_out_) route_->metrics.bytes.inc(direction::out, static_cast<double>(out - reported_out_));
    reported_in_ = std::max(reported_in_, in);
    reported_out_ = std::max(reported_out_, out);
}

const net::address& session::client_address() const {
    return accepted_ && accepted_->has_addresses() ? *accepted_->source : peer_;
}

client_key session::balance_key() const {
    // Only source_hash reads the key.
    if (route_->cfg.balance != config::balance_kind::source_hash) return client_key{};
    return client_key::of(client_address());
}

void session::finish(ending e) {
    if (finished_) return;
    finished_ = true;
    if (pair_ && !pair_->ended()) pair_->abort(datapath::end_reason::shutdown);  // its report, then back here
    const datapath::pair_report* r = pair_ ? &pair_->report() : nullptr;
    if (r) count_bytes(r->from_client, r->from_upstream);
    const auto lasted = std::chrono::steady_clock::now() - started_;
    if (route_) route_->metrics.duration.observe(std::chrono::duration<double>(lasted).count());
    for (auto* s : {client_.get(), upstream_.get()}) {
        if (!s) continue;
        // Not a clean end of both streams: each peer must see a reset, never a FIN after a short stream.
        if (e.reset) s->reset_on_close();
        s->close();
    }
    const std::string& route_name = route_ ? route_->cfg.name : listener_->preamble_route().cfg.name;
    if (r) log_sockmap_notes(*r, route_name);
    if (!env_.access_log || !e.logged) return;
    write(*env_.access_log,
          access_record{id_, route_name, client_text_.empty() ? "?" : client_text_, slot_ ? slot_.backend().name : "-",
                        r ? r->paths.text() : "-", std::chrono::duration_cast<std::chrono::milliseconds>(lasted).count(),
                        r ? r->from_client : 0, r ? r->from_upstream : 0, e.end});
}

void session::log_sockmap_notes(const datapath::pair_report& r, const std::string& route) const {
    if (r.stranded_bytes)
        spdlog::error("conn {} route {}: {} redirected bytes never reached the peer socket; both sides reset", id_, route,
                      r.stranded_bytes);
    if (r.unread_at_fin)
        spdlog::error("conn {} route {}: {} bytes the verdict passed before a FIN never became readable; both sides "
                      "reset",
                      id_, route, r.unread_at_fin);
    if (r.backlog_nudges)
        spdlog::warn("conn {} route {}: the peer's redirect backlog made no progress with an empty send queue; woken "
                     "{} time(s) ({})",
                     id_, route, r.backlog_nudges, r.stranded_bytes ? "in vain" : "it went on");
    if (r.demoted_bytes)
        spdlog::info("conn {} route {}: {} bytes copied by userspace after a sockmap demotion", id_, route,
                     r.demoted_bytes);
}

}  // namespace

net::awaitable<void> run_session(std::shared_ptr<const listener_routes> listener, session_env env, accepted_client client) {
    auto s = std::make_unique<session>(std::move(listener), env, std::move(client));
    co_await s->setup();
    if (!s->running()) co_return;
    s->owned_by_pair();
    s.release();  // the pair ends it
}

}  // namespace spliced::proxy
