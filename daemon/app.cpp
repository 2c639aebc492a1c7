// The running daemon: owns the worker io_contexts, listeners, BPF engine and metrics; start, drain, stop.
#include "app.hpp"

#include "datapath/probe.hpp"
#include "datapath/splice_pump.hpp"
#include "log/log.hpp"
#include "metrics/bpf_collector.hpp"
#include "metrics/registry.hpp"
#include "net/listen_claim.hpp"
#include "net/listener.hpp"
#include "net/spawn.hpp"
#include "net/resolve.hpp"
#include "config/loader.hpp"
#include "proxy/carry_over.hpp"
#include "proxy/health.hpp"
#include "proxy/route_table.hpp"
#include "proxy/session.hpp"
#include "sys/notify.hpp"
#include "sys/signals.hpp"
#include "sys/socket.hpp"

#include <algorithm>
#include <csignal>
#include <cstring>
#include <ctime>
#include <map>
#include <cstdlib>
#include <dirent.h>
#include <malloc.h>
#include <stdexcept>
#include <sys/socket.h>
#include <thread>

namespace spliced {

static_assert(config::sockmap_config{}.capacity == datapath::default_capacity,
              "the config's default sockmap capacity is what the BPF object declares");

namespace {

// One listening socket of a worker and the routes on its address. A reload swaps `group` (on the
// worker's thread); the socket stays, so no client of an address that stays is ever refused.
struct listener_slot {
    explicit listener_slot(net::tcp::acceptor a, std::shared_ptr<const proxy::listener_routes> g)
        : acceptor(std::move(a)), group(std::move(g)) {}
    net::tcp::acceptor acceptor;
    std::shared_ptr<const proxy::listener_routes> group;
};

// One thread with its own io_context and its own SO_REUSEPORT listeners.
struct worker {
    proxy::session_registry live;  // outlives the io_context, whose destruction may end sessions
    net::asio::io_context io{1};
    std::vector<std::shared_ptr<listener_slot>> listeners;
    proxy::session_env env;  // what new sessions get (a reload may change the access log)
    std::thread thread;
};

// A route's place-count limit applies to the sessions of its listen address when the address has no
// other route (else the session takes its place once it knows its route).
net::admit_gate* gate_of(const proxy::listener_routes& g) {
    return g.routes.size() == 1 ? g.routes.front()->admission.get() : nullptr;
}

// The next SIGTERM or SIGINT; a SIGHUP meanwhile (a reload during a drain) is ignored.
net::awaitable<void> next_signal(net::asio::signal_set& signals) {
    for (;;) {
        auto [ec, sig] = co_await signals.async_wait(net::use_tuple);
        if (ec || sig != SIGHUP) co_return;
        spdlog::warn("SIGHUP while draining: ignored");
    }
}

std::string monotonic_usec() {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return std::to_string(static_cast<std::uint64_t>(ts.tv_sec) * 1000000u + static_cast<std::uint64_t>(ts.tv_nsec) / 1000u);
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

// One generation of routing as built from a config, before it is put in place.
struct generation {
    std::vector<std::shared_ptr<proxy::route_runtime>> routes;
    std::vector<std::shared_ptr<proxy::listener_routes>> listeners;  // the routes grouped by listen address
    std::vector<std::unique_ptr<proxy::health_checks>> checks;       // from when it is in service
};

struct app::impl {
    config::config cfg;
    // Before the metrics: a scrape reads the engine's counters, so the engine must outlive the exposer.
    std::unique_ptr<datapath::sockmap_engine> engine;
    std::optional<datapath::probe_report> report;  // of the probe at start; reloads plan with it
    metrics::registry metrics;
    std::shared_ptr<spdlog::logger> access_log;
    proxy::carry_over carried;  // backend, queue and limit state by key, for the next generation
    generation current;
    std::map<std::string, net::listen_claim> claims;  // by listen address: every address listened on
    bool draining = false;
    bool reload_wanted = false;  // a SIGHUP came in that no reload has served yet
    bool reloading = false;      // reload_loop() runs
    std::atomic<long> active{0};
    std::atomic<std::uint64_t> next_id{1};
    std::vector<std::unique_ptr<worker>> workers;  // destroyed first: the sessions use everything above
    net::asio::io_context main_io{1};
    // Made before READY=1 is sent, so that from then on every signal is handled.
    net::asio::signal_set signals{main_io, SIGTERM, SIGINT, SIGHUP};

    explicit impl(config::config c) : cfg(std::move(c)) {
        // From here on a signal runs Asio's handler; without SA_RESTART it would fail whatever blocking call it
        // interrupts with EINTR: the probe's self-test connect() (auto then falls back to splice), a log write.
        if (!sys::restart_interrupted_calls({SIGTERM, SIGINT, SIGHUP}))
            spdlog::warn("cannot set SA_RESTART on the signal handlers: {}", std::strerror(errno));
    }

    datapath::kind resolve(const config::route& r) const;
    void probe();
    // The routes of `c` with their data path plans, backend pools and limits, grouped by listen
    // address; state of backends, queues and limits still in use is carried over by key. Throws
    // std::runtime_error when a route cannot run (e.g. sockmap forced without the BPF engine).
    generation build(const config::config& c, bool log_plans);
    // Puts `g` in service once every worker runs it: route limits, pools and health checks.
    void activate(generation& g);
    void open_listeners();
    void spawn_accept_loop(worker& w, const std::shared_ptr<listener_slot>& slot);
    net::awaitable<void> reload_loop();
    net::awaitable<void> reload();
    // Puts `next` in place of the running config; throws (having changed nothing) when it cannot.
    net::awaitable<void> apply(config::config next);
    void start_workers();
    void stop_accepting();
    void stop_workers();
    void cut_sessions();
    net::awaitable<void> serve_signals();
    net::awaitable<void> drain();
    net::awaitable<void> cut_and_wait();
};

datapath::kind app::impl::resolve(const config::route& r) const {
    using config::datapath_kind;
    const bool splice_ok = datapath::splice_available();
    switch (r.datapath) {
    case datapath_kind::sockmap:
        if (!engine)
            throw std::runtime_error("route " + r.name + ": datapath sockmap is unavailable: " +
                                     (report ? report->summary : std::string("not probed at start")));
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

void app::impl::probe() {
    bool wants_sockmap = false;
    for (const auto& r : cfg.routes)
        wants_sockmap |= r.datapath == config::datapath_kind::sockmap || r.datapath == config::datapath_kind::auto_select;
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
    auto* e = engine.get();
    auto bpf = std::make_shared<metrics::bpf_collector>();
    bpf->add("spliced_sockmap_entries", "SOCKHASH entries in use (two per connection on sockmap)",
             prometheus::MetricType::Gauge, [e] { return e ? static_cast<double>(e->entries()) : 0.0; });
    bpf->add("spliced_sockmap_capacity", "SOCKHASH entries available (two per connection; sockmap.capacity connections)",
             prometheus::MetricType::Gauge, [e] { return e ? 2.0 * e->capacity() : 0.0; });
    bpf->add("spliced_sockmap_peer_miss_total",
             "Redirects whose peer socket was missing; that direction moved to userspace copy",
             prometheus::MetricType::Counter,
             [e] { return e ? static_cast<double>(e->counter(SPLICED_CNT_PEER_MISS)) : 0.0; });
    metrics.add_collectable(std::move(bpf));
}

generation app::impl::build(const config::config& c, bool log_plans) {
    generation g;
    for (const auto& r : c.routes) {
        auto k = resolve(r);
        std::string why;
        if (r.datapath == config::datapath_kind::auto_select)
            why = report ? report->summary : "sockmap not probed at start";
        else
            why = std::string("configured ") + config::to_string(r.datapath);
        // auto with sockmap usable: start each connection on splice, move it to sockmap once it is
        // idle (short, bulk and busy request/response connections do better on splice).
        const bool promote = r.datapath == config::datapath_kind::auto_select && k == datapath::kind::sockmap &&
                             datapath::splice_available();
        if (promote) {
            k = datapath::kind::splice;
            if (log_plans)
                spdlog::info("route {}: datapath auto: splice first, then sockmap for connections that go idle ({})",
                             r.name, why);
        } else if (log_plans) {
            spdlog::info("route {}: datapath {} ({})", r.name, datapath::to_string(k), why);
        }
        std::vector<std::shared_ptr<proxy::backend_state>> states;
        for (const auto& b : r.backends)
            states.push_back(carried.backends.get(proxy::carry_over::backend_key(r.name, b.name),
                                                  [] { return std::make_shared<proxy::backend_state>(); }));
        auto queue = carried.queues.get(r.name, [] { return std::make_shared<proxy::backend_queue>(); });
        std::shared_ptr<proxy::admission> limit;
        if (r.max_connections)
            limit = carried.admissions.get(r.name, [&] { return std::make_shared<proxy::admission>(r.max_connections); });
        g.routes.push_back(std::make_shared<proxy::route_runtime>(r, datapath::plan{k, promote}, proxy::route_series(metrics, r),
                                                                  std::move(states), std::move(queue), std::move(limit)));
    }
    g.listeners = proxy::group_by_listener(g.routes, metrics);
    return g;
}

void app::impl::activate(generation& g) {
    for (const auto& r : g.routes) {
        if (r->admission) r->admission->set_limit(r->cfg.max_connections);
        r->pool->activate();
        if (r->cfg.health_check)
            g.checks.push_back(std::make_unique<proxy::health_checks>(main_io, r->pool, *r->cfg.health_check));
    }
}

void app::impl::open_listeners() {
    unsigned n = cfg.workers ? cfg.workers : std::max(1u, std::thread::hardware_concurrency());
    for (unsigned i = 0; i < n; ++i) {
        auto w = std::make_unique<worker>();
        for (const auto& group : current.listeners)
            w->listeners.push_back(std::make_shared<listener_slot>(net::open_listener(w->io, group->addr), group));
        workers.push_back(std::move(w));
    }
    for (const auto& group : current.listeners) {
        std::string names;
        for (const auto& r : group->routes) {
            names += names.empty() ? "" : ", ";
            names += r->cfg.name;
            if (!r->cfg.sni.empty()) names += " (" + std::to_string(r->cfg.sni.size()) + " SNI pattern(s))";
        }
        spdlog::info("listening on {}: route(s) {}{}", group->addr.text(), names,
                     group->accept_proxy_protocol ? "; PROXY header required" : "");
    }
    spdlog::info("{} worker thread(s)", n);
}

namespace {

// Every 10 s, the bytes that this worker's open connections moved go into spliced_bytes_total.
net::awaitable<void> report_bytes_every(proxy::session_registry& live, std::chrono::seconds period) {
    net::asio::steady_timer timer(co_await net::asio::this_coro::executor);
    for (;;) {
        timer.expires_after(period);
        auto [ec] = co_await timer.async_wait(net::use_tuple);
        if (ec) co_return;
        live.report_all();
    }
}

net::awaitable<void> run_listener(std::shared_ptr<listener_slot> slot,
                                  std::function<void(net::tcp::socket, bool)> on_accept) {
    // Named, not a temporary in the co_await expression: g++ 12 destroys such temporaries twice.
    std::function<net::admit_gate*()> gate = [s = slot.get()] { return gate_of(*s->group); };
    co_await net::accept_loop(slot->acceptor, std::move(gate), std::move(on_accept));
}

}  // namespace

void app::impl::spawn_accept_loop(worker& w, const std::shared_ptr<listener_slot>& slot) {
    auto on_accept = [this, w = &w, slot](net::tcp::socket s, bool admitted) {
        auto id = next_id.fetch_add(1, std::memory_order_relaxed);
        net::spawn(w->io, proxy::run_session(slot->group, w->env, std::move(s), id, admitted),
                   [id] { return fmt::format("conn {}: session", id); });
    };
    net::spawn(w.io, run_listener(slot, std::move(on_accept)), "accept loop on " + slot->group->addr.text());
}

void app::impl::start_workers() {
    for (auto& w : workers) {
        w->env = proxy::session_env{engine.get(), access_log, &active, &w->live};
        for (auto& slot : w->listeners) spawn_accept_loop(*w, slot);
        net::spawn(w->io, report_bytes_every(w->live, std::chrono::seconds(10)), "byte report");
        w->thread = std::thread([io = &w->io] {
            auto guard = net::asio::make_work_guard(*io);
            io->run();
        });
    }
}

void app::impl::stop_accepting() {
    for (auto& w : workers)
        net::asio::post(w->io, [w = w.get()] {
            for (auto& slot : w->listeners) {
                boost::system::error_code ignored;
                slot->acceptor.close(ignored);
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
    // Each accept loop's frame holds its listener: closed now, it is not deregistered from the reactor
    // while the io_context's destruction runs that reactor's shutdown (which frees those frames).
    for (auto& w : workers)
        for (auto& slot : w->listeners) {
            boost::system::error_code ignored;
            slot->acceptor.close(ignored);
        }
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
            // SIGHUPs that arrive during a reload make one more after it, however many they are.
            reload_wanted = true;
            if (!reloading) net::spawn(main_io, reload_loop(), "reload");
            continue;
        }
        draining = true;
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

net::awaitable<void> app::impl::reload_loop() {
    reloading = true;
    while (reload_wanted && !draining) {
        reload_wanted = false;
        co_await reload();
    }
    reloading = false;
}

net::awaitable<void> app::impl::reload() {
    sys::notify("RELOADING=1\nMONOTONIC_USEC=" + monotonic_usec());
    spdlog::info("SIGHUP: reloading {}", cfg.source);
    const auto started = std::chrono::steady_clock::now();
    bool ok = false;
    try {
        co_await apply(config::load_file(cfg.source, net::resolve_host));
        ok = true;
    } catch (const std::exception& e) {
        spdlog::error("reload failed, the running config stays: {}", e.what());
    }
    metrics.config_loaded(true, ok);
    // Parsing a large file (or one refused for its size) took memory the daemon will not use again: hand
    // it back rather than keep it for the life of the process.
    ::malloc_trim(0);
    if (ok)
        spdlog::info("reload done in {} ms: {} route(s) on {} listen address(es)",
                     std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started).count(),
                     current.routes.size(), current.listeners.size());
    if (!draining) sys::notify("READY=1\nSTATUS=serving");  // else STOPPING=1 has been said since
}

net::awaitable<void> app::impl::apply(config::config next) {
    // What needs a restart keeps its running value.
    if (next.workers != cfg.workers) {
        spdlog::warn("reload: workers changed ({} -> {}): needs a restart; keeping {}", cfg.workers, next.workers, cfg.workers);
        next.workers = cfg.workers;
    }
    if (next.sockmap.capacity != cfg.sockmap.capacity) {
        spdlog::warn("reload: sockmap.capacity changed ({} -> {}): needs a restart; keeping {}", cfg.sockmap.capacity,
                     next.sockmap.capacity, cfg.sockmap.capacity);
        next.sockmap.capacity = cfg.sockmap.capacity;
    }
    if (next.metrics.enabled != cfg.metrics.enabled ||
        (next.metrics.enabled && next.metrics.listen != cfg.metrics.listen)) {
        spdlog::warn("reload: metrics.listen changed: needs a restart; keeping {}",
                     cfg.metrics.enabled ? cfg.metrics.listen.text() : std::string("no metrics endpoint"));
        next.metrics = cfg.metrics;
    }
    // Everything that can fail comes first, while nothing has changed: plans, the access log, binds.
    generation g = build(next, false);
    auto next_access_log = next.log.access_log == cfg.log.access_log && next.log.access_log == "stdout"
                               ? access_log  // nothing to reopen
                               : log::make_access_log(next.log);
    std::map<std::string, net::listen_claim> claimed;  // the new addresses, claimed before they are bound
    for (const auto& group : g.listeners)
        if (!claims.contains(group->addr.text())) claimed.emplace(group->addr.text(), group->addr);
    std::vector<std::vector<std::shared_ptr<listener_slot>>> opened(workers.size());
    for (std::size_t i = 0; i < workers.size(); ++i)
        for (const auto& group : g.listeners) {
            const bool kept = std::any_of(workers[i]->listeners.begin(), workers[i]->listeners.end(),
                                          [&](const auto& slot) { return slot->group->addr == group->addr; });
            if (!kept)
                opened[i].push_back(std::make_shared<listener_slot>(net::open_listener(workers[i]->io, group->addr), group));
        }

    // Now the swap, on every worker's own thread.
    std::atomic<std::size_t> pending{workers.size()};
    for (std::size_t i = 0; i < workers.size(); ++i) {
        net::asio::post(workers[i]->io, [this, w = workers[i].get(), added = std::move(opened[i]), &g, &pending,
                                         next_access_log]() mutable {
            w->env.access_log = next_access_log;
            std::vector<std::shared_ptr<listener_slot>> keep;
            for (auto& slot : w->listeners) {
                auto found = std::find_if(g.listeners.begin(), g.listeners.end(),
                                          [&](const auto& group) { return group->addr == slot->group->addr; });
                if (found == g.listeners.end()) {
                    boost::system::error_code ignored;
                    slot->acceptor.close(ignored);  // its accept loop ends; its sessions run on
                    continue;
                }
                slot->group = *found;
                keep.push_back(slot);
            }
            for (auto& slot : added) {
                spawn_accept_loop(*w, slot);
                keep.push_back(slot);
            }
            w->listeners = std::move(keep);
            pending.fetch_sub(1, std::memory_order_release);
        });
    }
    net::asio::steady_timer timer(co_await net::asio::this_coro::executor);
    while (pending.load(std::memory_order_acquire) > 0) {  // each worker takes a moment at most
        timer.expires_after(std::chrono::microseconds(200));
        co_await timer.async_wait(net::use_tuple);
    }
    activate(g);
    for (const auto& r : g.routes)
        if (std::none_of(current.routes.begin(), current.routes.end(), [&](const auto& o) { return o->cfg.name == r->cfg.name; }))
            spdlog::info("reload: route {} added", r->cfg.name);
    for (const auto& r : current.routes)
        if (std::none_of(g.routes.begin(), g.routes.end(), [&](const auto& o) { return o->cfg.name == r->cfg.name; }))
            spdlog::info("reload: route {} removed (its open connections run on)", r->cfg.name);
    std::erase_if(claims, [&](const auto& kv) {
        return std::none_of(g.listeners.begin(), g.listeners.end(), [&](const auto& l) { return l->addr.text() == kv.first; });
    });
    claims.merge(claimed);
    current = std::move(g);  // the old generation's health checks stop here
    carried.prune();
    access_log = std::move(next_access_log);
    log::init(next.log);
    cfg = std::move(next);
}

app::app(config::config cfg) : impl_(std::make_unique<impl>(std::move(cfg))) {
    auto& d = *impl_;
    d.access_log = log::make_access_log(d.cfg.log);
    d.probe();
    d.current = d.build(d.cfg, true);
    d.activate(d.current);
    d.metrics.config_loaded(false, true);
    // First of all that binds: another spliced on one of these addresses refuses this start here.
    for (const auto& group : d.current.listeners) d.claims.emplace(group->addr.text(), group->addr);
    if (d.cfg.metrics.enabled) {
        d.metrics.serve(d.cfg.metrics.listen);
        spdlog::info("metrics on http://{}/metrics", d.cfg.metrics.listen.text());
    }
    d.open_listeners();  // last: a start that fails before this binds no listen address
}

app::~app() {
    if (!impl_) return;
    impl_->metrics.stop_serving();
    impl_->stop_workers();
    impl_->current.checks.clear();  // their timers belong to main_io, which goes before `current`
}

int app::run() {
    auto& d = *impl_;
    d.start_workers();
    net::spawn(d.main_io, d.serve_signals(), "signal handling");
    if (auto period = sys::watchdog_period(); period.count() > 0)
        net::spawn(d.main_io, ping_watchdog(period), "watchdog");
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
