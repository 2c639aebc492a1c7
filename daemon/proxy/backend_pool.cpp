// A route's backends as every worker shares them: health, open connections, balancing, the wait queue.
#include "proxy/backend_pool.hpp"

#include <algorithm>
#include <spdlog/spdlog.h>

namespace spliced::proxy {

using clock = std::chrono::steady_clock;

// A connection waiting in a route's queue.
struct backend_queue::waiter {
    std::shared_ptr<net::wakeup> wake;
    client_key client;
    std::vector<const backend_state*> tried;
    bool counted_no_up = false;
    // Set (under the queue's mutex) when a slot was given to it; the waiter makes it a lease. Not a lease
    // here: a waiter let go under the mutex would give its slot back under it.
    std::shared_ptr<backend_pool> granted;
    std::size_t granted_index = 0;
    backend_pool::lease take() { return backend_pool::lease(std::move(granted), granted_index); }
};

namespace {

// Whether two checks probe alike (what they send and expect, where, how long they wait): results of one
// stand for the other. Interval, rise and fall say only how often and how many.
bool same_probe(const config::health_check& a, const config::health_check& b) {
    return a.timeout == b.timeout && a.send == b.send && a.expect == b.expect && a.port == b.port;
}

}  // namespace

backend_pool::lease& backend_pool::lease::operator=(lease&& o) noexcept {
    if (this != &o) {
        reset();
        pool_ = std::move(o.pool_);
        index_ = o.index_;
    }
    return *this;
}

void backend_pool::lease::reset() {
    if (auto p = std::move(pool_)) p->release(index_);
}

backend_pool::backend_pool(const config::route& route, const route_metrics& metrics,
                           std::vector<std::shared_ptr<backend_state>> states, std::shared_ptr<backend_queue> queue,
                           std::uint64_t seed)
    : route_(route.name),
      backends_(route.backends),
      check_(route.health_check),
      passive_(route.passive),
      metrics_(metrics),
      states_(std::move(states)),
      queue_(std::move(queue)) {
    std::vector<unsigned> weights;
    for (const auto& b : backends_) weights.push_back(b.weight);
    balancer_ = make_balancer(route.balance, std::move(weights), seed);
    for (std::size_t i = 0; i < backends_.size(); ++i) {
        std::lock_guard lock(states_[i]->mutex);
        publish(i);
    }
}

void backend_pool::activate() {
    for (std::size_t i = 0; i < backends_.size(); ++i) {
        std::lock_guard lock(states_[i]->mutex);
        reconcile_locked(i);
    }
    std::lock_guard lock(queue_->mutex_);
    queue_->current_ = weak_from_this();
    serve_waiters_locked();  // the new backend list may have room the old one had not
}

void backend_pool::reconcile_locked(std::size_t index) {
    auto& s = *states_[index];
    if (s.checked && (!check_ || !s.checked_with || !same_probe(*check_, *s.checked_with))) {
        // The check that judged it is gone or probes otherwise now: its verdict goes with it (a new check's
        // first result sets the state at once, as at a start).
        s.checked = false;
        s.passes = s.failures = 0;
        s.checked_with.reset();
        if (!s.up && !s.down_by_passive)
            set_up_locked(index, true, check_ ? "its health check changed" : "its route has no health check any more");
    }
    if (s.down_by_passive && !passive_) {
        s.down_by_passive = false;
        set_up_locked(index, true, "its route has no passive health any more");
    }
    publish(index);
}

bool backend_pool::up_now(std::size_t index, clock::time_point now) {
    auto& s = *states_[index];
    std::lock_guard lock(s.mutex);
    // Ejected by failed connects with no active check to bring it back: back once the eject time is over.
    if (!s.up && s.down_by_passive && !check_ && now >= s.ejected_until)
        set_up_locked(index, true, "passive ejection over");
    return s.up;
}

void backend_pool::set_up_locked(std::size_t index, bool up, const std::string& why) {
    auto& s = *states_[index];
    if (s.up == up) return;
    s.up = up;
    if (up) {
        s.down_by_passive = false;
        s.connect_failures = 0;
    }
    spdlog::warn("route {}: backend {} is {}: {}", route_, backends_[index].name, up ? "up" : "down", why);
    publish(index);
}

void backend_pool::publish(std::size_t index) {
    auto& m = metrics_.backends[index];
    m.up.set(states_[index]->up ? 1 : 0);
    m.active.set(static_cast<double>(states_[index]->active.load(std::memory_order_relaxed)));
}

backend_pool::choice backend_pool::choose_locked(waiter& w) {
    const auto now = clock::now();
    bool any_up = false;
    auto& up = up_scratch_;
    up.assign(backends_.size(), false);
    for (std::size_t i = 0; i < backends_.size(); ++i) {
        up[i] = up_now(i, now);
        any_up |= backends_[i].weight > 0 && up[i];
    }
    if (!any_up && !w.counted_no_up) {
        w.counted_no_up = true;
        metrics_.no_backend_up.inc();
    }
    scratch_.clear();
    bool full = false;
    for (std::size_t i = 0; i < backends_.size(); ++i) {
        const auto& b = backends_[i];
        if (b.weight == 0 || (any_up && !up[i])) continue;
        if (std::find(w.tried.begin(), w.tried.end(), states_[i].get()) != w.tried.end()) continue;
        const auto active = states_[i]->active.load(std::memory_order_relaxed);
        if (b.max_connections && active >= b.max_connections) {
            full = true;
            continue;
        }
        scratch_.push_back({i, b.weight, active});
    }
    if (scratch_.empty()) return full ? choice::full : choice::none;
    const std::size_t index = scratch_[balancer_->pick(scratch_, w.client)].index;
    states_[index]->active.fetch_add(1, std::memory_order_relaxed);
    {
        std::lock_guard lock(states_[index]->mutex);
        publish(index);
    }
    w.granted = shared_from_this();
    w.granted_index = index;
    return choice::leased;
}

void backend_pool::serve_waiters_locked() {
    auto& q = *queue_;
    auto pool = q.current_.lock();
    if (!pool) return;
    while (!q.waiters_.empty()) {
        auto& w = *q.waiters_.front();
        if (pool->choose_locked(w) != choice::leased) return;  // the oldest waits on: nobody overtakes it
        w.wake->wake();
        q.waiters_.pop_front();
    }
}

void backend_pool::release(std::size_t index) {
    states_[index]->active.fetch_sub(1, std::memory_order_relaxed);
    {
        std::lock_guard state_lock(states_[index]->mutex);
        publish(index);
    }
    std::lock_guard lock(queue_->mutex_);
    serve_waiters_locked();
}

net::awaitable<backend_pool::acquired> backend_pool::acquire(request& r, std::chrono::milliseconds queue) {
    auto w = std::make_shared<waiter>();
    w->client = r.client;
    w->tried = r.tried;
    w->counted_no_up = r.counted_no_up;
    auto& q = *queue_;
    {
        std::lock_guard lock(q.mutex_);
        auto pool = q.current_.lock();
        if (!pool) pool = shared_from_this();  // not in service yet (or no more): its own choice
        // Behind others already waiting: a newcomer does not overtake them.
        const choice c = q.waiters_.empty() ? pool->choose_locked(*w) : choice::full;
        r.counted_no_up = w->counted_no_up;
        if (c == choice::leased) co_return acquired{outcome::leased, w->take()};
        if (c == choice::none) co_return acquired{};
        w->wake = std::make_shared<net::wakeup>(co_await net::asio::this_coro::executor);
        q.waiters_.push_back(w);
    }
    const auto deadline = clock::now() + queue;
    for (;;) {
        co_await w->wake->wait(deadline);
        std::lock_guard lock(q.mutex_);
        r.counted_no_up = w->counted_no_up;
        if (w->granted) co_return acquired{outcome::leased, w->take()};
        if (clock::now() >= deadline) {
            std::erase(q.waiters_, w);
            co_return acquired{outcome::queue_timeout, {}};
        }
    }
}

void backend_pool::connect_failed(std::size_t index) {
    if (!passive_) return;
    auto& s = *states_[index];
    std::lock_guard lock(s.mutex);
    if (++s.connect_failures < passive_->failures || !s.up) return;
    s.ejected_until = clock::now() + passive_->eject;
    set_up_locked(index, false,
                  std::to_string(s.connect_failures) + " consecutive failed connects" +
                      (check_ ? ", until a health check passes"
                              : ", ejected for " + std::to_string(passive_->eject.count()) + " ms"));
    s.down_by_passive = true;
}

void backend_pool::connect_succeeded(std::size_t index) {
    if (!passive_) return;
    std::lock_guard lock(states_[index]->mutex);
    states_[index]->connect_failures = 0;
}

void backend_pool::check_started(std::size_t index, clock::time_point at) {
    std::lock_guard lock(states_[index]->mutex);
    states_[index]->last_check = at;
}

clock::time_point backend_pool::next_check(std::size_t index, const config::health_check& check) {
    auto& s = *states_[index];
    std::lock_guard lock(s.mutex);
    if (!s.checked || !s.checked_with || !same_probe(*s.checked_with, check)) return clock::now();
    return s.last_check + check.interval;
}

void backend_pool::check_result(std::size_t index, bool passed, const std::string& why) {
    metrics_.backends[index].health_checks.inc(passed ? check_result::success : check_result::failure);
    const unsigned rise = check_ ? check_->rise : 1, fall = check_ ? check_->fall : 1;
    bool came_up = false;
    {
        auto& s = *states_[index];
        std::lock_guard lock(s.mutex);
        const bool was_up = s.up;
        s.checked_with = check_;
        if (!s.checked) {  // the first result sets the state at once
            s.checked = true;
            s.passes = passed ? 1 : 0;
            s.failures = passed ? 0 : 1;
            set_up_locked(index, passed, passed ? "first health check passed" : "first health check failed: " + why);
        } else if (passed) {
            s.failures = 0;
            ++s.passes;
            if (s.down_by_passive) set_up_locked(index, true, "health check passed after a passive ejection");
            else if (s.passes >= rise)
                set_up_locked(index, true, std::to_string(s.passes) + " health checks passed");
        } else {
            s.passes = 0;
            ++s.failures;
            if (s.failures >= fall)
                set_up_locked(index, false, std::to_string(s.failures) + " health checks failed, the last: " + why);
        }
        came_up = !was_up && s.up;
    }
    if (came_up) {  // a backend back up may take those waiting
        std::lock_guard lock(queue_->mutex_);
        serve_waiters_locked();
    }
}

}  // namespace spliced::proxy
