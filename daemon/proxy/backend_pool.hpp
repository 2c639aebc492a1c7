// A route's backends as every worker shares them: health, open connections, the balancer's state and
// the FIFO of connections waiting for a free backend. Per-backend state is keyed by (route, address) and
// the queue by route: both outlive a route table, so that the next one takes them over.
#pragma once

#include "config/config.hpp"
#include "proxy/route_metrics.hpp"
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
    // The check schedule, kept across reloads: when the last check started, and what it was.
    std::chrono::steady_clock::time_point last_check{};
    std::optional<config::health_check> checked_with;
};

class backend_pool;

// The connections of one route waiting for a backend slot, oldest first: one FIFO for every worker and
// every route table of the route, so that a slot freed by a connection of any table goes to the oldest
// waiter of any table. The newest pool in service chooses their backends.
class backend_queue {
    friend class backend_pool;
    struct waiter;
    std::mutex mutex_;  // the FIFO and the balancers of every pool of the route; before a backend's state mutex
    std::deque<std::shared_ptr<waiter>> waiters_;
    std::weak_ptr<backend_pool> current_;
};

class backend_pool : public std::enable_shared_from_this<backend_pool> {
public:
    // `states`: one per backend of `route` (in its order), fresh or taken over from an earlier table;
    // `queue`: the route's, likewise.
    backend_pool(const config::route& route, const route_metrics& metrics,
                 std::vector<std::shared_ptr<backend_state>> states, std::shared_ptr<backend_queue> queue,
                 std::uint64_t seed);

    // One slot taken on one backend of one pool; gives it back when destroyed (a waiter may get it at once).
    class lease {
    public:
        lease() = default;
        lease(std::shared_ptr<backend_pool> pool, std::size_t index) : pool_(std::move(pool)), index_(index) {}
        lease(lease&& o) noexcept : pool_(std::move(o.pool_)), index_(o.index_) {}
        lease& operator=(lease&& o) noexcept;
        ~lease() { reset(); }
        void reset();
        explicit operator bool() const { return pool_ != nullptr; }
        backend_pool& pool() const { return *pool_; }
        std::size_t index() const { return index_; }
        const config::backend& backend() const { return pool_->backend(index_); }

    private:
        std::shared_ptr<backend_pool> pool_;
        std::size_t index_ = 0;
    };

    enum class outcome { leased, no_backend, queue_timeout };
    struct acquired {
        outcome result = outcome::no_backend;
        lease slot;  // of the pool in service when it was granted (a reload may have put a newer one there)
    };
    // One connection's search for a backend, over its attempts: the client (source_hash keys on it), the
    // backends it tried, and whether it was counted as finding none up (once per connection).
    struct request {
        client_key client;
        std::vector<const backend_state*> tried;
        bool counted_no_up = false;
    };
    // A backend for a new connection, chosen by the balancer of the route's newest pool in service among
    // its backends that are up, have weight > 0, are not full and are not in `r.tried`. When none is up,
    // all of them are candidates (a checker may be wrong). When every candidate is full, waits in the
    // route's FIFO up to `queue` for a slot.
    net::awaitable<acquired> acquire(request& r, std::chrono::milliseconds queue);

    // Puts this pool in service in place of the route's earlier one (a reload's table is in place): its
    // balancer serves the route's waiters from now on, and the carried-over states are brought in line
    // with this route's health settings (a backend no check or passive accounting holds down any more is up).
    void activate();

    // Passive health: real traffic's connect results.
    void connect_failed(std::size_t index);
    void connect_succeeded(std::size_t index);
    // Active health: a check starts (its time is the backend's schedule); its result and, when it failed, why.
    void check_started(std::size_t index, std::chrono::steady_clock::time_point at);
    void check_result(std::size_t index, bool passed, const std::string& why);
    // When the backend's next check is due under `check`: at once unless it was checked by the same
    // check before (a reload keeps the schedule), then one interval after the last.
    std::chrono::steady_clock::time_point next_check(std::size_t index, const config::health_check& check);

    const std::string& route() const { return route_; }
    std::size_t size() const { return backends_.size(); }
    const config::backend& backend(std::size_t index) const { return backends_[index]; }
    const backend_state& state(std::size_t index) const { return *states_[index]; }
    const route_metrics& metrics() const { return metrics_; }
    bool up(std::size_t index) { return up_now(index, std::chrono::steady_clock::now()); }
    std::uint64_t active(std::size_t index) const { return states_[index]->active.load(std::memory_order_relaxed); }

private:
    using waiter = backend_queue::waiter;
    enum class choice { leased, full, none };
    // Under the queue's mutex: picks and takes a slot for `w`'s connection.
    choice choose_locked(waiter& w);
    // Under the queue's mutex: hands free slots to waiters, oldest first, through the pool in service.
    void serve_waiters_locked();
    void release(std::size_t index);
    // Under the backend's state mutex: its health state changes; logged at warn with why. Serves no
    // waiter; the caller does that (under the queue's mutex) when it may.
    void set_up_locked(std::size_t index, bool up, const std::string& why);
    // Under the backend's state mutex: what activate() changes of one carried-over state.
    void reconcile_locked(std::size_t index);
    // Whether the backend is up now (an expired passive ejection ends here); takes its state mutex.
    bool up_now(std::size_t index, std::chrono::steady_clock::time_point now);
    void publish(std::size_t index);  // the backend's gauges

    std::string route_;
    std::vector<config::backend> backends_;
    std::optional<config::health_check> check_;
    std::optional<config::passive_health> passive_;
    route_metrics metrics_;
    std::vector<std::shared_ptr<backend_state>> states_;
    std::shared_ptr<backend_queue> queue_;
    std::unique_ptr<balancer> balancer_;  // under the queue's mutex
    std::vector<candidate> scratch_;      // choose_locked()'s, kept to spare an allocation per connection
    std::vector<bool> up_scratch_;
};

}  // namespace spliced::proxy
