// A route's backends as every worker shares them: health, open connections, balancing, the wait queue.
#include "proxy/backend_pool.hpp"

#include <spdlog/spdlog.h>

namespace spliced::proxy {

using clock = std::chrono::steady_clock;

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

backend_pool::backend_pool(const config::route& route, const metrics::route_metrics& metrics,
                           std::vector<std::shared_ptr<backend_state>> states, std::uint64_t seed)
    : route_(route.name),
      backends_(route.backends),
      active_checks_(route.health_check.has_value()),
      passive_(route.passive),
      metrics_(metrics),
      states_(std::move(states)) {
    if (route.health_check) {
        check_rise_ = route.health_check->rise;
        check_fall_ = route.health_check->fall;
    }
    std::vector<unsigned> weights;
    for (const auto& b : backends_) weights.push_back(b.weight);
    balancer_ = make_balancer(route.balance, std::move(weights), seed);
    for (std::size_t i = 0; i < backends_.size(); ++i) {
        std::lock_guard lock(states_[i]->mutex);
        publish(i);
    }
}

bool backend_pool::up(std::size_t index) const {
    return const_cast<backend_pool*>(this)->up_now(index, clock::now());
}

bool backend_pool::up_now(std::size_t index, clock::time_point now) {
    auto& s = *states_[index];
    std::lock_guard lock(s.mutex);
    // Ejected by failed connects with no active check to bring it back: back once the eject time is over.
    if (!s.up && s.down_by_passive && !active_checks_ && now >= s.ejected_until)
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
    spdlog::warn("route {}: backend {} is {}: {}", route_, backends_[index].addr.text, up ? "up" : "down", why);
    publish(index);
}

void backend_pool::publish(std::size_t index) {
    metrics_.backend_state(index, states_[index]->up, states_[index]->active.load(std::memory_order_relaxed));
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
        metrics_.no_backend_up();
    }
    scratch_.clear();
    bool full = false;
    for (std::size_t i = 0; i < backends_.size(); ++i) {
        const auto& b = backends_[i];
        if (b.weight == 0 || (i < w.tried.size() && w.tried[i]) || (any_up && !up[i])) continue;
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
    w.granted = index;
    return choice::leased;
}

void backend_pool::serve_waiters_locked() {
    while (!queue_.empty()) {
        auto& w = *queue_.front();
        if (choose_locked(w) != choice::leased) return;  // the oldest waits on: nobody overtakes it
        w.wake->wake();
        queue_.pop_front();
    }
}

void backend_pool::release(std::size_t index) {
    std::lock_guard lock(mutex_);
    states_[index]->active.fetch_sub(1, std::memory_order_relaxed);
    {
        std::lock_guard state_lock(states_[index]->mutex);
        publish(index);
    }
    serve_waiters_locked();
}

net::awaitable<backend_pool::acquired> backend_pool::acquire(const client_key& client, const std::vector<bool>& tried,
                                                             std::chrono::milliseconds queue, bool& counted_no_up) {
    auto w = std::make_shared<waiter>();
    w->client = client;
    w->tried = tried;
    w->counted_no_up = counted_no_up;
    {
        std::lock_guard lock(mutex_);
        // Behind others already waiting: a newcomer does not overtake them.
        const choice c = queue_.empty() ? choose_locked(*w) : choice::full;
        counted_no_up = w->counted_no_up;
        if (c == choice::leased) co_return acquired{outcome::leased, lease(shared_from_this(), *w->granted)};
        if (c == choice::none) co_return acquired{};
        w->wake = std::make_shared<net::wakeup>(co_await net::asio::this_coro::executor);
        queue_.push_back(w);
    }
    const auto deadline = clock::now() + queue;
    for (;;) {
        co_await w->wake->wait(deadline);
        std::lock_guard lock(mutex_);
        counted_no_up = w->counted_no_up;
        if (w->granted) co_return acquired{outcome::leased, lease(shared_from_this(), *w->granted)};
        if (clock::now() >= deadline) {
            std::erase(queue_, w);
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
                      (active_checks_ ? ", until a health check passes"
                                      : ", ejected for " + std::to_string(passive_->eject.count()) + " ms"));
    s.down_by_passive = true;
}

void backend_pool::connect_succeeded(std::size_t index) {
    if (!passive_) return;
    std::lock_guard lock(states_[index]->mutex);
    states_[index]->connect_failures = 0;
}

void backend_pool::check_result(std::size_t index, bool passed, const std::string& why) {
    metrics_.health_checked(index, passed);
    bool came_up = false;
    {
        auto& s = *states_[index];
        std::lock_guard lock(s.mutex);
        const bool was_up = s.up;
        if (!s.checked) {  // the first result sets the state at once
            s.checked = true;
            s.passes = passed ? 1 : 0;
            s.failures = passed ? 0 : 1;
            set_up_locked(index, passed, passed ? "first health check passed" : "first health check failed: " + why);
        } else if (passed) {
            s.failures = 0;
            ++s.passes;
            if (s.down_by_passive) set_up_locked(index, true, "health check passed after a passive ejection");
            else if (s.passes >= check_rise_)
                set_up_locked(index, true, std::to_string(s.passes) + " health checks passed");
        } else {
            s.passes = 0;
            ++s.failures;
            if (s.failures >= check_fall_)
                set_up_locked(index, false, std::to_string(s.failures) + " health checks failed, the last: " + why);
        }
        came_up = !was_up && s.up;
    }
    if (came_up) {  // a backend back up may take those waiting
        std::lock_guard lock(mutex_);
        serve_waiters_locked();
    }
}

}  // namespace spliced::proxy
