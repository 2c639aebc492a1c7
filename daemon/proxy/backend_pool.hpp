// A route's backends as every worker shares them: health, open connections, the balancer's state and
// the FIFO of connections waiting for a free backend. Per-backend state is keyed by (route, address)
// and held by shared_ptr, so that the next route table can take it over.
#pragma once

#include "config/config.hpp"
#include "metrics/metrics.hpp"
#include "net/wakeup.hpp"
#include "proxy/balancer.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace spliced::proxy {

// What one backend's health and load are. Shared by the pools of successive route tables (a reload
// keeps it by route and address), so it has its own lock: `mutex` guards all but `active`.
struct backend_state {
    std::atomic<std::uint64_t> active{0};  // open connections (a sockmap one counts until it ends)
    std::mutex mutex;
    bool up = true;                        // until a check or passive accounting says otherwise
    bool checked = false;                  // an active check has reported
    bool down_by_passive = false;          // marked down by failed connects, not by a check
    unsigned passes = 0, failures = 0;     // consecutive active check results
    unsigned connect_failures = 0;         // consecutive failed connects from real traffic
    std::chrono::steady_clock::time_point ejected_until{};  // passive ejection without active checks
};

class backend_pool : public std::enable_shared_from_this<backend_pool> {
public:
    // `states`: one per backend of `route` (in its order), fresh or taken over from an earlier table.
    backend_pool(const config::route& route, const metrics::route_metrics& metrics,
                 std::vector<std::shared_ptr<backend_state>> states, std::uint64_t seed);

    // One slot taken on one backend; gives it back when destroyed (a waiter may get it at once).
    class lease {
    public:
        lease() = default;
        lease(std::shared_ptr<backend_pool> pool, std::size_t index) : pool_(std::move(pool)), index_(index) {}
        lease(lease&& o) noexcept : pool_(std::move(o.pool_)), index_(o.index_) {}
        lease& operator=(lease&& o) noexcept;
        ~lease() { reset(); }
        void reset();
        explicit operator bool() const { return pool_ != nullptr; }
        std::size_t index() const { return index_; }

    private:
        std::shared_ptr<backend_pool> pool_;
        std::size_t index_ = 0;
    };

    enum class outcome { leased, no_backend, queue_timeout };
    struct acquired {
        outcome result = outcome::no_backend;
        lease slot;
    };
    // A backend for a new connection, chosen by the balancer among those that are up, have weight > 0,
    // are not full and are not in `tried` (by index). When none is up, all of them are candidates (a
    // checker may be wrong; counted once per connection through `counted_no_up`). When every candidate is
    // full, waits in the pool's FIFO up to `queue` for a slot.
    net::awaitable<acquired> acquire(const client_key& client, const std::vector<bool>& tried,
                                     std::chrono::milliseconds queue, bool& counted_no_up);

    // Passive health: real traffic's connect results.
    void connect_failed(std::size_t index);
    void connect_succeeded(std::size_t index);
    // Active health: one check's result and, when it failed, why.
    void check_result(std::size_t index, bool passed, const std::string& why);

    std::size_t size() const { return backends_.size(); }
    const config::backend& backend(std::size_t index) const { return backends_[index]; }
    const std::string& route_name() const { return route_; }
    bool up(std::size_t index) const;
    // Stops the health check loops of this pool (a newer route table has its own).
    void retire() { retired_.store(true, std::memory_order_relaxed); }
    bool retired() const { return retired_.load(std::memory_order_relaxed); }
    std::uint64_t active(std::size_t index) const { return states_[index]->active.load(std::memory_order_relaxed); }

private:
    struct waiter {
        std::shared_ptr<net::wakeup> wake;
        client_key client;
        std::vector<bool> tried;
        bool counted_no_up = false;
        std::optional<std::size_t> granted;  // set (under the mutex) when a slot was given to it
    };
    enum class choice { leased, full, none };
    // Under mutex_: picks and takes a slot for `w`'s connection.
    choice choose_locked(waiter& w);
    // Under mutex_: hands free slots to waiters, oldest first.
    void serve_waiters_locked();
    void release(std::size_t index);
    // Under the backend's state mutex: its health state changes; logged at warn with why. Serves no
    // waiter; the caller does that (under mutex_) when it may.
    void set_up_locked(std::size_t index, bool up, const std::string& why);
    // Whether the backend is up now (an expired passive ejection ends here); takes its state mutex.
    bool up_now(std::size_t index, std::chrono::steady_clock::time_point now);
    void publish(std::size_t index);  // the backend's gauges

    std::string route_;
    std::vector<config::backend> backends_;
    bool active_checks_;
    unsigned check_rise_ = 1, check_fall_ = 1;
    std::optional<config::passive_health> passive_;
    metrics::route_metrics metrics_;
    std::vector<std::shared_ptr<backend_state>> states_;
    std::atomic<bool> retired_{false};
    mutable std::mutex mutex_;  // the balancer, the queue; taken before a backend's state mutex
    std::unique_ptr<balancer> balancer_;
    std::deque<std::shared_ptr<waiter>> queue_;
    std::vector<candidate> scratch_;  // choose_locked()'s, kept to spare an allocation per connection
    std::vector<bool> up_scratch_;
};

}  // namespace spliced::proxy
