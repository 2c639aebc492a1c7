// The running daemon: owns the worker io_contexts, listeners, BPF engine and metrics; start, drain, stop.
#include "app.hpp"

#include "datapath/probe.hpp"
#include "datapath/splice_pump.hpp"
#include "log/log.hpp"
#include "metrics/metrics.hpp"
#include "net/listener.hpp"
#include "proxy/health.hpp"
#include "proxy/route_table.hpp"
#include "proxy/session.hpp"
#include "sys/notify.hpp"
#include "sys/socket.hpp"

#include <csignal>
#include <cstdlib>
#include <dirent.h>
#include <stdexcept>
#include <sys/socket.h>
#include <thread>

namespace spliced {

static_assert(config::sockmap_config{}.capacity == datapath::default_capacity,
              "the config's default sockmap capacity is what the BPF object declares");

namespace {

// One thread with its own io_context and its own SO_REUSEPORT listeners.
struct worker {
    proxy::session_registry live;  // outlives the io_context, whose destruction may end sessions
    net::asio::io_context io{1};
    std::vector<std::pair<net::tcp::acceptor, std::shared_ptr<const proxy::listener_routes>>> listeners;
    std::thread thread;
};

net::awaitable<void> next_signal(net::asio::signal_set& signals) { co_await signals.async_wait(net::use_tuple); }

net::awaitable<void> ping_watchdog(std::chrono::microseconds every) {
    net::asio::steady_timer timer(co_await net::asio::this_coro::executor);
    for (;;) {
        sys::notify("WATCHDOG=1");
        timer.expires_after(every);
        auto [ec] = co_await timer.async_wait(net::use_tuple);
        if (ec) co_return;
    }
}

// Gives every TCP connection the process still has open (listeners aside) SO_LINGER {1, 0}, so that
// closing it sends a reset: a peer whose transfer the drain timeout cuts must not take the FIN that a
// plain close at exit sends for the clean end of a complete stream. Run with the workers stopped.
int reset_open_connections() {
    DIR* dir = ::opendir("/proc/self/fd");
    if (!dir) return 0;
    int reset = 0;
    while (const dirent* e = ::readdir(dir)) {
        char* end = nullptr;
        const long fd = std::strtol(e->d_name, &end, 10);
        if (end == e->d_name || *end != '\0' || fd == ::dirfd(dir)) continue;
        int domain = 0, type = 0, listening = 0;
        socklen_t len = sizeof(int);
        if (::getsockopt(static_cast<int>(fd), SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0) continue;
        if (domain != AF_INET && domain != AF_INET6) continue;
        len = sizeof(int);
        if (::getsockopt(static_cast<int>(fd), SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM) continue;
        len = sizeof(int);
        if (::getsockopt(static_cast<int>(fd), SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 || listening) continue;
        if (!sys::set_linger_reset(static_cast<int>(fd))) ++reset;
    }
    ::closedir(dir);
    return reset;
}

}  // namespace

struct app::impl {
    config::config cfg;
    // Before the metrics: a scrape reads the engine's counters, so the engine must outlive the exposer.
    std::unique_ptr<datapath::sockmap_engine> engine;
    metrics::registry metrics;
    std::shared_ptr<spdlog::logger> access_log;
    std::vector<std::shared_ptr<proxy::route_runtime>> routes;
    std::vector<std::shared_ptr<proxy::listener_routes>> listeners;  // the routes grouped by listen address
    std::atomic<long> active{0};
    std::atomic<std::uint64_t> next_id{1};
    std::vector<std::unique_ptr<worker>> workers;  // destroyed first: the sessions use everything above
    net::asio::io_context main_io{1};
    // Made before READY=1 is sent, so that from then on every signal is handled.
    net::asio::signal_set signals{main_io, SIGTERM, SIGINT, SIGHUP};

    explicit impl(config::config c) : cfg(std::move(c)) {}

    datapath::kind resolve(const config::route& r, const datapath::probe_report* report) const;
    void choose_datapaths();
    void open_listeners();
    void start_workers();
    void stop_accepting();
    void stop_workers();
    void cut_sessions();
    net::awaitable<void> serve_signals();
    net::awaitable<void> drain();
    net::awaitable<void> cut_and_wait();
};

datapath::kind app::impl::resolve(const config::route& r, const datapath::probe_report* report) const {
    using config::datapath_kind;
    const bool splice_ok = datapath::splice_available();
    switch (r.datapath) {
    case datapath_kind::sockmap:
        if (!engine)
            throw std::runtime_error("route " + r.name + ": datapath sockmap is unavailable: " +
                                     (report ? report->summary : std::string("not probed")));
        return datapath::kind::sockmap;
    case datapath_kind::auto_select:
        if (engine && report && report->usable) return datapath::kind::sockmap;
        return splice_ok ? datapath::kind::splice : datapath::kind::copy;
    case datapath_kind::splice:
        if (!splice_ok) throw std::runtime_error("route " + r.name + ": splice(2) on TCP sockets is unavailable");
        return datapath::kind::splice;
    case datapath_kind::copy: return datapath::kind::copy;
    }
    return datapath::kind::copy;
}

void app::impl::choose_datapaths() {
    bool wants_sockmap = false;
    for (const auto& r : cfg.routes)
        wants_sockmap |= r.datapath == config::datapath_kind::sockmap || r.datapath == config::datapath_kind::auto_select;
    std::optional<datapath::probe_report> report;
    if (wants_sockmap) {
        report.emplace();
        engine = datapath::probe_sockmap(*report, cfg.sockmap.capacity);
        for (const auto& c : report->checks)
            spdlog::info("sockmap probe: {}: {} ({})", c.name, c.ok ? "ok" : "FAILED", c.detail);
        spdlog::info("{}", report->summary);
        if (engine)
            spdlog::info("sockmap: room for {} connections ({} entries per map); past it, new ones run on splice",
                         engine->capacity(), 2ull * engine->capacity());
        bool forced = false;
        for (const auto& r : cfg.routes) forced |= r.datapath == config::datapath_kind::sockmap;
        if (engine && !report->usable) {
            if (forced)
                spdlog::warn("datapath sockmap is forced although the probe did not pass: {}", report->summary);
            else
                engine.reset();  // auto will not use it: do not keep the maps around
        }
    }
    for (const auto& r : cfg.routes) {
        auto k = resolve(r, report ? &*report : nullptr);
        std::string why;
        if (r.datapath == config::datapath_kind::auto_select)
            why = report ? report->summary : "sockmap not probed";
        else
            why = std::string("configured ") + config::to_string(r.datapath);
        // auto with sockmap usable: start each connection on splice, move it to sockmap once it
        // is not a bulk transfer (short and bulk connections do better on splice, the rest on sockmap).
        const bool promote = r.datapath == config::datapath_kind::auto_select && k == datapath::kind::sockmap &&
                             datapath::splice_available();
        if (promote) {
            k = datapath::kind::splice;
            spdlog::info("route {}: datapath auto: splice first, then sockmap for connections that are not bulk "
                         "transfers ({})",
                         r.name, why);
        } else {
            spdlog::info("route {}: datapath {} ({})", r.name, datapath::to_string(k), why);
        }
        std::vector<std::shared_ptr<proxy::backend_state>> states;
        for (std::size_t i = 0; i < r.backends.size(); ++i) states.push_back(std::make_shared<proxy::backend_state>());
        routes.push_back(
            std::make_shared<proxy::route_runtime>(r, datapath::plan{k, promote}, metrics.add_route(r), std::move(states)));
        if (r.health_check) proxy::start_health_checks(main_io, routes.back()->pool, *r.health_check);
    }
    auto* e = engine.get();
    metrics.add_sampled_counter("spliced_sockmap_peer_miss_total",
                                "Redirects whose peer socket was missing; that direction moved to userspace copy",
                                [e] { return e ? static_cast<double>(e->counter(SPLICED_CNT_PEER_MISS)) : 0.0; });
}

void app::impl::open_listeners() {
    listeners = proxy::group_by_listener(routes, metrics);
    unsigned n = cfg.workers ? cfg.workers : std::max(1u, std::thread::hardware_concurrency());
    for (unsigned i = 0; i < n; ++i) {
        auto w = std::make_unique<worker>();
        for (const auto& group : listeners) w->listeners.emplace_back(net::open_listener(w->io, group->addr), group);
        workers.push_back(std::move(w));
    }
    for (const auto& group : listeners) {
        std::string names;
        for (const auto& r : group->routes) {
            names += names.empty() ? "" : ", ";
            names += r->cfg.name;
            if (!r->cfg.sni.empty()) names += " (" + std::to_string(r->cfg.sni.size()) + " SNI pattern(s))";
        }
        spdlog::info("listening on {}: route(s) {}{}", group->addr.text, names,
                     group->accept_proxy_protocol ? "; PROXY header required" : "");
    }
    spdlog::info("{} worker thread(s)", n);
}

void app::impl::start_workers() {
    for (auto& w : workers) {
        proxy::session_env env{engine.get(), access_log.get(), &active, &w->live};
        for (auto& [acceptor, group] : w->listeners) {
            // A listen address with one route applies its max_connections at accept; one shared by
            // several routes, once the session knows its route.
            net::admit_gate* gate = group->routes.size() == 1 ? group->routes.front()->admission.get() : nullptr;
            auto on_accept = [this, env, group = group, &io = w->io, admitted = gate != nullptr](net::tcp::socket s) {
                auto id = next_id.fetch_add(1, std::memory_order_relaxed);
                net::asio::co_spawn(io, proxy::run_session(group, env, std::move(s), id, admitted),
                                    [id](std::exception_ptr e) {
                    if (!e) return;
                    try {
                        std::rethrow_exception(e);
                    } catch (const std::exception& ex) {
                        spdlog::error("conn {}: session failed: {}", id, ex.what());
                    }
                });
            };
            net::asio::co_spawn(w->io, net::accept_loop(acceptor, gate, on_accept), net::asio::detached);
        }
        w->thread = std::thread([io = &w->io] {
            auto guard = net::asio::make_work_guard(*io);
            io->run();
        });
    }
}

void app::impl::stop_accepting() {
    for (auto& w : workers)
        net::asio::post(w->io, [w = w.get()] {
            for (auto& [acceptor, group] : w->listeners) {
                boost::system::error_code ignored;
                acceptor.close(ignored);
            }
        });
}

void app::impl::cut_sessions() {
    for (auto& w : workers)
        net::asio::post(w->io, [w = w.get()] {
            if (auto n = w->live.cut_all()) spdlog::debug("cut {} session(s)", n);
        });
}

void app::impl::stop_workers() {
    for (auto& w : workers) w->io.stop();
    for (auto& w : workers)
        if (w->thread.joinable()) w->thread.join();
}

net::awaitable<void> app::impl::drain() {
    stop_accepting();
    auto deadline = std::chrono::steady_clock::now() + cfg.drain_timeout;
    net::asio::steady_timer timer(co_await net::asio::this_coro::executor);
    while (active.load() > 0 && std::chrono::steady_clock::now() < deadline) {
        timer.expires_after(std::chrono::milliseconds(20));
        co_await timer.async_wait(net::use_tuple);
    }
    if (long left = active.load(); left > 0) {
        spdlog::warn("drain timeout ({} ms) reached with {} connection(s) open; resetting them",
                     cfg.drain_timeout.count(), left);
        co_await cut_and_wait();
    } else {
        spdlog::info("drained: no connection left");
    }
}

net::awaitable<void> app::impl::cut_and_wait() {
    // Each cut session resets both sides and writes its access-log line; those still connecting
    // end within their connect timeout. Whatever is left after this wait is finished at stop.
    cut_sessions();
    net::asio::steady_timer timer(co_await net::asio::this_coro::executor);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(250);
    while (active.load() > 0 && std::chrono::steady_clock::now() < deadline) {
        timer.expires_after(std::chrono::milliseconds(5));
        co_await timer.async_wait(net::use_tuple);
    }
}

net::awaitable<void> app::impl::serve_signals() {
    for (;;) {
        auto [ec, sig] = co_await signals.async_wait(net::use_tuple);
        if (ec) co_return;
        if (sig == SIGHUP) {
            spdlog::warn("SIGHUP: config reload is not implemented yet; keeping the running config");
            continue;
        }
        spdlog::info("{}: stop accepting, draining up to {} ms", sig == SIGTERM ? "SIGTERM" : "SIGINT",
                     cfg.drain_timeout.count());
        sys::notify("STOPPING=1");
        // A second signal while draining ends it at once: open connections are cut.
        using namespace net::asio::experimental::awaitable_operators;
        auto ended = co_await (drain() || next_signal(signals));
        if (ended.index() == 1) {
            spdlog::warn("second signal: resetting {} open connection(s)", active.load());
            co_await cut_and_wait();
        }
        main_io.stop();
        co_return;
    }
}

app::app(config::config cfg) : impl_(std::make_unique<impl>(std::move(cfg))) {
    auto& d = *impl_;
    d.access_log = log::make_access_log(d.cfg.log);
    d.choose_datapaths();
    d.open_listeners();
    if (d.cfg.metrics.enabled) {
        d.metrics.serve(d.cfg.metrics.listen);
        spdlog::info("metrics on http://{}/metrics", d.cfg.metrics.listen.text);
    }
}

app::~app() {
    if (!impl_) return;
    impl_->metrics.stop_serving();
    impl_->stop_workers();
}

int app::run() {
    auto& d = *impl_;
    d.start_workers();
    net::asio::co_spawn(d.main_io, d.serve_signals(), net::asio::detached);
    if (auto period = sys::watchdog_period(); period.count() > 0)
        net::asio::co_spawn(d.main_io, ping_watchdog(period), net::asio::detached);
    spdlog::info("spliced {} ready", SPLICED_VERSION);
    sys::notify("READY=1\nSTATUS=serving");
    d.main_io.run();  // until serve_signals() has drained and stopped it
    d.metrics.stop_serving();  // no scrape runs while the rest is torn down
    d.stop_workers();
    // Sessions still open now were cut but did not end in time (e.g. still connecting): end them here,
    // each with a reset and its access-log line.
    std::size_t left = 0;
    for (auto& w : d.workers) left += w->live.finish_all();
    if (left) spdlog::info("{} connection(s) closed with a reset at exit", left);
    // Any TCP socket still open (an upstream still connecting) closes with a reset too.
    reset_open_connections();
    spdlog::info("stopped");
    return 0;
}

}  // namespace spliced
