// The running daemon: start, serve, drain on a wakeup, stop.
#include "app/app.hpp"

#include "app/state.hpp"
#include "log/log.hpp"
#include "metrics/bpf_collector.hpp"
#include "net/spawn.hpp"
#include "sys/notify.hpp"
#include "sys/signals.hpp"
#include "sys/socket.hpp"

#include <cstring>
#include <spdlog/spdlog.h>
#include <thread>

namespace spliced::app {

static_assert(config::sockmap_config{}.capacity == datapath::default_capacity,
              "the config's default sockmap capacity is what the BPF object declares");

namespace {

// The next SIGTERM or SIGINT; a SIGHUP meanwhile (a reload during a drain) is ignored.
net::awaitable<void> next_signal(net::asio::signal_set& signals) {
    for (;;) {
        auto [ec, sig] = co_await signals.async_wait(net::use_tuple);
        if (ec || sig != SIGHUP) co_return;
        spdlog::warn("SIGHUP while draining: ignored");
    }
}

net::awaitable<void> ping_watchdog(std::chrono::microseconds every) {
    net::asio::steady_timer timer(co_await net::asio::this_coro::executor);
    for (;;) {
        sys::notify("WATCHDOG=1");
        timer.expires_after(every);
        auto [ec] = co_await timer.async_wait(net::use_tuple);
        if (ec) co_return;
    }
}

// The BPF engine's counters, read at each scrape.
void add_bpf_series(metrics::registry& registry, const datapath::sockmap_engine* e) {
    auto bpf = std::make_shared<metrics::bpf_collector>();
    bpf->add("spliced_sockmap_entries", "SOCKHASH entries in use (two per connection on sockmap)",
             prometheus::MetricType::Gauge, [e] { return e ? static_cast<double>(e->entries()) : 0.0; });
    bpf->add("spliced_sockmap_capacity", "SOCKHASH entries available (two per connection; sockmap.capacity connections)",
             prometheus::MetricType::Gauge, [e] { return e ? 2.0 * e->capacity() : 0.0; });
    bpf->add("spliced_sockmap_peer_miss_total", "Redirects whose peer socket was missing; that direction moved to "
             "userspace copy", prometheus::MetricType::Counter,
             [e] { return e ? static_cast<double>(e->counter(SPLICED_CNT_PEER_MISS)) : 0.0; });
    registry.add_collectable(std::move(bpf));
}

void log_listeners(const proxy::route_table& table, unsigned workers) {
    for (const auto& group : table.listeners) {
        std::string names;
        for (const auto& r : group->routes) {
            names += names.empty() ? "" : ", ";
            names += r->cfg.name;
            if (!r->cfg.sni.empty()) names += " (" + std::to_string(r->cfg.sni.size()) + " SNI pattern(s))";
        }
        spdlog::info("listening on {}: route(s) {}{}", group->addr.text(), names,
                     group->accept_proxy_protocol ? "; PROXY header required" : "");
    }
    spdlog::info("{} worker thread(s)", workers);
}

// Every open connection is cut (a reset both ways, its access-log line); those still connecting end within
// their connect timeout, or at stop.
net::awaitable<void> cut_and_wait(state& s) {
    s.workers->cut_sessions();
    co_await s.open.wait_none(std::chrono::steady_clock::now() + std::chrono::milliseconds(250));
}

net::awaitable<void> drain(state& s) {
    s.workers->stop_accepting();
    co_await s.open.wait_none(std::chrono::steady_clock::now() + s.cfg.drain_timeout);
    if (long left = s.open.count(); left > 0) {
        spdlog::warn("drain timeout ({} ms) reached with {} connection(s) open; resetting them",
                     s.cfg.drain_timeout.count(), left);
        co_await cut_and_wait(s);
    } else {
        spdlog::info("drained: no connection left");
    }
}

net::awaitable<void> serve_signals(state& s) {
    for (;;) {
        auto [ec, sig] = co_await s.signals.async_wait(net::use_tuple);
        if (ec) co_return;
        if (sig == SIGHUP) {
            // SIGHUPs that arrive during a reload make one more after it, however many they are.
            s.reload_wanted = true;
            if (!s.reloading) net::spawn(s.main_io, s.reload_loop(), "reload");
            continue;
        }
        s.draining = true;
        spdlog::info("{}: stop accepting, draining up to {} ms", sig == SIGTERM ? "SIGTERM" : "SIGINT",
                     s.cfg.drain_timeout.count());
        sys::notify("STOPPING=1");
        // A second signal while draining ends it at once: open connections are cut.
        using namespace net::asio::experimental::awaitable_operators;
        auto ended = co_await (drain(s) || next_signal(s.signals));
        if (ended.index() == 1) {
            spdlog::warn("second signal: resetting {} open connection(s)", s.open.count());
            co_await cut_and_wait(s);
        }
        s.main_io.stop();
        co_return;
    }
}

}  // namespace

state::state(config::config c) : cfg(std::move(c)) {
    // From here on a signal runs Asio's handler; without SA_RESTART it would fail whatever blocking call it
    // interrupts with EINTR: the probe's self-test connect() (auto then falls back to splice), a log write.
    if (!sys::restart_interrupted_calls({SIGTERM, SIGINT, SIGHUP}))
        spdlog::warn("cannot set SA_RESTART on the signal handlers: {}", std::strerror(errno));
}

proxy::planner state::planner(bool log) const {
    return [this, log](const config::route& r) { return paths->plan_for(r, log); };
}

std::map<std::string, net::listen_claim> state::claim(const proxy::route_table& t) const {
    std::map<std::string, net::listen_claim> claimed;
    for (const auto& group : t.listeners)
        if (!claims.contains(group->addr.text())) claimed.emplace(group->addr.text(), group->addr);
    return claimed;
}

daemon::daemon(config::config cfg) : s_(std::make_unique<state>(std::move(cfg))) {
    auto& s = *s_;
    s.access_log = log::make_access_log(s.cfg.log);
    s.paths.emplace(s.cfg);
    add_bpf_series(s.metrics, s.paths->engine());
    s.table = proxy::route_table::build(s.cfg, s.planner(true), s.metrics, s.carried);
    s.table.activate(s.main_io);
    s.metrics.config_loaded();
    // First of all that binds: another spliced on one of these addresses refuses this start here.
    s.claims = s.claim(s.table);
    if (s.cfg.metrics.enabled) {
        s.metrics.serve(s.cfg.metrics.listen);
        spdlog::info("metrics on http://{}/metrics", s.cfg.metrics.listen.text());
    }
    const unsigned n = s.cfg.workers ? s.cfg.workers : std::max(1u, std::thread::hardware_concurrency());
    s.workers.emplace(n, proxy::session_env{nullptr, s.access_log, &s.open, nullptr}, s.paths->engine());
    s.workers->open(s.table);  // last: a start that fails before this binds no listen address
    log_listeners(s.table, n);
}

daemon::~daemon() {
    if (!s_) return;
    s_->metrics.stop_serving();
    if (s_->workers) s_->workers->stop();
    s_->table.checks.clear();  // their timers belong to main_io, which goes before `table`
}

int daemon::run() {
    auto& s = *s_;
    s.workers->start();
    net::spawn(s.main_io, serve_signals(s), "signal handling");
    if (auto period = sys::watchdog_period(); period.count() > 0)
        net::spawn(s.main_io, ping_watchdog(period), "watchdog");
    spdlog::info("spliced {} ready", SPLICED_VERSION);
    sys::notify("READY=1\nSTATUS=serving");
    s.main_io.run();  // until serve_signals() has drained and stopped it
    s.metrics.stop_serving();  // no scrape runs while the rest is torn down
    if (auto left = s.workers->stop()) spdlog::info("{} connection(s) closed with a reset at exit", left);
    // Any TCP socket still open (an upstream still connecting) closes with a reset too.
    sys::reset_open_tcp_sockets();
    spdlog::info("stopped");
    return 0;
}

}  // namespace spliced::app
