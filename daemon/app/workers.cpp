// The worker threads, their listeners and sessions; a reload's table swapped in on each worker's thread.
#include "app/workers.hpp"

#include "net/listener.hpp"
#include "net/spawn.hpp"
#include "net/wakeup.hpp"

#include <algorithm>
#include <spdlog/spdlog.h>
#include <thread>

namespace spliced::app {

// One listening socket of a worker and the routes on its address. A reload swaps `group` (on the
// worker's thread); the socket stays, so no client of an address that stays is ever refused.
struct workers::listener_slot {
    listener_slot(net::tcp::acceptor a, std::shared_ptr<const proxy::listener_routes> g)
        : acceptor(std::move(a)), group(std::move(g)) {}
    net::tcp::acceptor acceptor;
    std::shared_ptr<const proxy::listener_routes> group;
};

// One thread with its own io_context and its own SO_REUSEPORT listeners.
struct workers::worker {
    proxy::session_registry live;  // outlives the io_context, whose destruction may end sessions
    net::asio::io_context io{1};
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

// The accept loop of one listener; the frame holds the slot (and so its acceptor) while it runs.
net::awaitable<void> run_listener(std::shared_ptr<const void> slot, net::tcp::acceptor& acceptor,
                                  std::function<net::admit_gate*()> gate,
                                  std::function<void(net::tcp::socket, bool)> on_accept) {
    co_await net::accept_loop(acceptor, std::move(gate), std::move(on_accept));
    slot.reset();
}

void close(net::tcp::acceptor& a) {
    boost::system::error_code ignored;
    a.close(ignored);
}

}  // namespace

workers::workers(unsigned count, proxy::session_env env) {
    for (unsigned i = 0; i < count; ++i) {
        auto w = std::make_unique<worker>();
        w->env = env;
        w->env.live = &w->live;
        workers_.push_back(std::move(w));
    }
}

workers::~workers() {
    if (!stopped_) stop();
}

void workers::open(const proxy::route_table& table) {
    for (auto& w : workers_)
        for (const auto& group : table.listeners)
            w->listeners.push_back(std::make_shared<listener_slot>(net::open_listener(w->io, group->addr), group));
}

void workers::spawn_accept_loop(worker& w, const std::shared_ptr<listener_slot>& slot) {
    auto on_accept = [this, w = &w, slot](net::tcp::socket s, bool admitted) {
        auto id = next_id_.fetch_add(1, std::memory_order_relaxed);
        net::spawn(w->io, proxy::run_session(slot->group, w->env, std::move(s), id, admitted),
                   [id] { return fmt::format("conn {}: session", id); });
    };
    // The gate is asked before each accept: a reload may change it.
    std::function<net::admit_gate*()> gate = [s = slot.get()] { return s->group->accept_gate(); };
    net::spawn(w.io, run_listener(slot, slot->acceptor, std::move(gate), std::move(on_accept)),
               "accept loop on " + slot->group->addr.text());
}

void workers::start() {
    for (auto& w : workers_) {
        for (auto& slot : w->listeners) spawn_accept_loop(*w, slot);
        net::spawn(w->io, report_bytes_every(w->live, std::chrono::seconds(10)), "byte report");
        w->thread = std::thread([io = &w->io] {
            auto guard = net::asio::make_work_guard(*io);
            io->run();
        });
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
                    std::make_shared<listener_slot>(net::open_listener(workers_[i]->io, group->addr), group));
        }
    return out;
}

net::awaitable<void> workers::swap(const proxy::route_table& table, std::unique_ptr<added> listeners,
                                   std::shared_ptr<spdlog::logger> access_log) {
    auto done = std::make_shared<net::wakeup>(co_await net::asio::this_coro::executor);
    auto pending = std::make_shared<std::atomic<std::size_t>>(workers_.size());
    for (std::size_t i = 0; i < workers_.size(); ++i) {
        net::asio::post(workers_[i]->io, [this, w = workers_[i].get(), added = std::move(listeners->per_worker_[i]),
                                          &table, access_log, done, pending]() mutable {
            w->env.access_log = access_log;
            std::vector<std::shared_ptr<listener_slot>> keep;
            for (auto& slot : w->listeners) {
                if (auto group = table.listener_on(slot->group->addr)) {
                    slot->group = std::move(group);
                    keep.push_back(slot);
                } else {
                    close(slot->acceptor);  // its accept loop ends; its sessions run on
                }
            }
            for (auto& slot : added) {
                spawn_accept_loop(*w, slot);
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
        net::asio::post(w->io, [w = w.get()] {
            for (auto& slot : w->listeners) close(slot->acceptor);
        });
}

void workers::cut_sessions() {
    for (auto& w : workers_)
        net::asio::post(w->io, [w = w.get()] {
            if (auto n = w->live.cut_all()) spdlog::debug("cut {} session(s)", n);
        });
}

std::size_t workers::stop() {
    stopped_ = true;
    for (auto& w : workers_) w->io.stop();
    for (auto& w : workers_)
        if (w->thread.joinable()) w->thread.join();
    // Each accept loop's frame holds its listener: closed now, it is not deregistered from the reactor
    // while the io_context's destruction runs that reactor's shutdown (which frees those frames).
    for (auto& w : workers_)
        for (auto& slot : w->listeners) close(slot->acceptor);
    // Sessions still open now were cut but did not end in time (e.g. still connecting): they end here,
    // each with a reset and its access-log line.
    std::size_t left = 0;
    for (auto& w : workers_) left += w->live.finish_all();
    return left;
}

}  // namespace spliced::app
