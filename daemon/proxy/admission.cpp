// A route's max_connections: open client connections at once, shared by every worker.
#include "proxy/admission.hpp"

namespace spliced::proxy {

bool admission::try_admit() {
    auto n = open_.load(std::memory_order_relaxed);
    while (n < limit_.load(std::memory_order_relaxed))
        if (open_.compare_exchange_weak(n, n + 1, std::memory_order_acq_rel)) return true;
    return false;
}

void admission::set_limit(std::uint32_t limit) {
    if (limit > limit_.exchange(limit, std::memory_order_relaxed)) wake_waiting();  // room for those waiting
}

void admission::release() {
    open_.fetch_sub(1, std::memory_order_acq_rel);
    wake_waiting();
}

void admission::wake_waiting() {
    std::vector<std::shared_ptr<net::wakeup>> wake;
    std::vector<std::function<void()>> calls;
    {
        std::lock_guard lock(mutex_);
        wake.swap(waiting_);
        calls.swap(room_calls_);
    }
    for (auto& w : wake) w->wake();
    for (auto& f : calls) f();
}

void admission::call_when_room(std::function<void()> f) {
    {
        std::lock_guard lock(mutex_);
        // Checked under the lock that release() takes (see wait_for_room).
        if (open_.load(std::memory_order_acquire) >= limit_.load(std::memory_order_relaxed)) {
            room_calls_.push_back(std::move(f));
            return;
        }
    }
    f();
}

net::awaitable<void> admission::wait_for_room(std::chrono::steady_clock::time_point deadline) {
    auto me = std::make_shared<net::wakeup>(co_await net::asio::this_coro::executor);
    {
        std::lock_guard lock(mutex_);
        // Checked under the lock that release() takes: a place freed before this is seen here, one freed
        // after it wakes us.
        if (open_.load(std::memory_order_acquire) < limit_.load(std::memory_order_relaxed)) co_return;
        waiting_.push_back(me);
    }
    co_await me->wait(deadline);
    std::lock_guard lock(mutex_);
    std::erase(waiting_, me);
}

}  // namespace spliced::proxy
