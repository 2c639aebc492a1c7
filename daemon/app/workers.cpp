// The worker threads, their listeners and sessions; a reload's table swapped in on each worker's thread.
#include "app/workers.hpp"

#include "datapath/engage.hpp"
#include "net/core_acceptor.hpp"
#include "net/event_core.hpp"
#include "net/listener.hpp"
#include "net/spawn.hpp"
#include "net/wakeup.hpp"

#include <algorithm>
#include <spdlog/spdlog.h>
#include <thread>

namespace spliced::app {

// One listening socket of a worker and the routes on its address. A reload swaps `group` (on the
// worker's thread); the socket stays, so no client of an address that stays is ever refused. Bound on the
// main thread; accepting (in the worker's event core) from when the worker takes it.
struct workers::listener_slot {
    listener_slot(net::tcp::acceptor a, std::shared_ptr<const proxy::listener_routes> g)
        : bound(std::move(a)), group(std::move(g)) {}
    net::tcp::acceptor bound;
    std::unique_ptr<net::core_acceptor> accepting;
    std::shared_ptr<const proxy::listener_routes> group;
    void close() {
        if (accepting) accepting->close();
        boost::system::error_code ignored;
        bound.close(ignored);
    }
};

// One thread with its own io_context, event core and SO_REUSEPORT listeners.
struct workers::worker {
    proxy::session_registry live;  // outlives the io_context, whose destruction may end sessions
    std::optional<net::asio::io_context> io{std::in_place, 1};
    std::unique_ptr<net::event_core> core;
    std::optional<datapath::worker_resources> data;  // the pairs' shared parts: the core, pipes, copy buffer
    std::vector<std::shared_ptr<listener_slot>> listeners;
    proxy::session_env env;  // what new sessions get (a reload may change the access log)
    std::thread thread;
};

workers::added::added() = default;
workers::added::~added() = default;

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

}  // namespace

workers::workers(unsigned count, proxy::session_env env, datapath::sockmap_engine* engine) {
    for (unsigned i = 0; i < count; ++i) {
        auto w = std::make_unique<worker>();
        w->core = std::make_unique<net::event_core>(*w->io);
        w->data.emplace(*w->core, engine);
        w->env = env;
        w->env.live = &w->live;
        w->env.data = &*w->data;
        workers_.push_back(std::move(w));
    }
}

workers::~workers() {
    if (!stopped_) stop();
    // The listeners' Asio objects go before their io_context; every session goes (and with it every wake-up it
    // left in shared waiting lists) before any core.
    for (auto& w : workers_) w->listeners.clear();
    for (auto& w : workers_) w->io.reset();
}

void workers::open(const proxy::route_table& table) {
    for (auto& w : workers_)
        for (const auto& group : table.listeners)
            w->listeners.push_back(std::make_shared<listener_slot>(net::open_listener(*w->io, group->addr), group));
}

void workers::start_accepting(worker& w, listener_slot& slot) {
    auto on_accept = [this, w = &w, s = &slot](sys::unique_fd fd, const net::address& peer, bool admitted) {
        proxy::accepted_client client{std::make_unique<net::core_socket>(*w->core, std::move(fd)), peer,
                                      next_id_.fetch_add(1, std::memory_order_relaxed), admitted};
        if (!client.socket->ok()) {  // out of kernel memory for the registration
            if (admitted) s->group->accept_gate()->release();
            return;  // the socket closes
        }
        const auto id = client.id;
        net::spawn(*w->io, proxy::run_session(s->group, w->env, std::move(client)),
                   [id] { return fmt::format("conn {}: session", id); });
        w->core->asio_work_pending();
    };
    // The gate is asked before each accept: a reload may change it.
    slot.accepting = std::make_unique<net::core_acceptor>(*w.core, std::move(slot.bound),
                                                          [s = &slot] { return s->group->accept_gate(); },
                                                          std::move(on_accept));
}

void workers::start() {
    for (auto& w : workers_) {
        for (auto& slot : w->listeners) start_accepting(*w, *slot);
        net::spawn(*w->io, report_bytes_every(w->live, std::chrono::seconds(10)), "byte report");
        w->thread = std::thread([core = w->core.get()] { core->run(); });
    }
}

std::unique_ptr<workers::added> workers::bind_new(const proxy::route_table& table) {
    auto out = std::make_unique<added>();
    out->per_worker_.resize(workers_.size());
    for (std::size_t i = 0; i < workers_.size(); ++i)
        for (const auto& group : table.listeners) {
            const auto& have = workers_[i]->listeners;
            if (std::none_of(have.begin(), have.end(), [&](const auto& s) { return s->group->addr == group->addr; }))
                out->per_worker_[i].push_back(
                    std::make_shared<listener_slot>(net::open_listener(*workers_[i]->io, group->addr), group));
        }
    return out;
}

net::awaitable<void> workers::swap(const proxy::route_table& table, std::unique_ptr<added> listeners,
                                   std::shared_ptr<spdlog::logger> access_log) {
    auto done = std::make_shared<net::wakeup>(co_await net::asio::this_coro::executor);
    auto pending = std::make_shared<std::atomic<std::size_t>>(workers_.size());
    for (std::size_t i = 0; i < workers_.size(); ++i) {
        workers_[i]->core->post([this, w = workers_[i].get(), added = std::move(listeners->per_worker_[i]), &table,
                                 access_log, done, pending]() mutable {
            w->env.access_log = access_log;
            std::vector<std::shared_ptr<listener_slot>> keep;
            for (auto& slot : w->listeners) {
                if (auto group = table.listener_on(slot->group->addr)) {
                    slot->group = std::move(group);
                    if (slot->accepting) w->core->again(*slot->accepting);  // the route's limit may have changed
                    keep.push_back(slot);
                } else {
                    slot->close();  // accepting ends; its sessions run on
                }
            }
            for (auto& slot : added) {
                start_accepting(*w, *slot);
                keep.push_back(slot);
            }
            w->listeners = std::move(keep);
            if (pending->fetch_sub(1, std::memory_order_acq_rel) == 1) done->wake();
        });
    }
    while (pending->load(std::memory_order_acquire) > 0)
        co_await done->wait(std::chrono::steady_clock::time_point::max());
}

void workers::stop_accepting() {
    for (auto& w : workers_)
        w->core->post([w = w.get()] {
            for (auto& slot : w->listeners) slot->close();
        });
}

void workers::cut_sessions() {
    for (auto& w : workers_)
        w->core->post([w = w.get()] {
            if (auto n = w->live.cut_all()) spdlog::debug("cut {} session(s)", n);
        });
}

std::size_t workers::stop() {
    stopped_ = true;
    for (auto& w : workers_) w->core->stop();
    for (auto& w : workers_)
        if (w->thread.joinable()) w->thread.join();
    for (auto& w : workers_)
        for (auto& slot : w->listeners) slot->close();
    // Sessions still open now were cut but did not end in time (e.g. still connecting): they end here,
    // each with a reset and its access-log line.
    std::size_t left = 0;
    for (auto& w : workers_) left += w->live.finish_all();
    // Their setup coroutines, suspended on a socket, go with the io_context (see abandon_waits).
    for (auto& w : workers_) w->core->abandon_waits();
    return left;
}

}  // namespace spliced::app
