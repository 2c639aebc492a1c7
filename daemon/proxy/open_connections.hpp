// The client connections the process has open, and a wait for there to be none: what a drain waits on,
// told by the last connection to close rather than polled.
#pragma once

#include "net/wakeup.hpp"

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>

namespace spliced::proxy {

class open_connections {
public:
    void opened() { count_.fetch_add(1, std::memory_order_relaxed); }
    // From any thread; the last one wakes a wait_none() in progress.
    void closed() {
        if (count_.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
        std::lock_guard lock(mutex_);
        if (waiter_) waiter_->wake();
    }
    long count() const { return count_.load(std::memory_order_acquire); }

    // On the caller's executor: returns once none is open, or at `deadline`. One waiter at a time.
    net::awaitable<void> wait_none(std::chrono::steady_clock::time_point deadline) {
        auto wake = std::make_shared<net::wakeup>(co_await net::asio::this_coro::executor);
        {
            std::lock_guard lock(mutex_);
            waiter_ = wake;
        }
        // A close between the check and the wait is not lost: wakeup keeps a wake() that came first.
        while (count() > 0 && std::chrono::steady_clock::now() < deadline) co_await wake->wait(deadline);
        std::lock_guard lock(mutex_);
        waiter_.reset();
    }

private:
    std::atomic<long> count_{0};
    std::mutex mutex_;
    std::shared_ptr<net::wakeup> waiter_;
};

}  // namespace spliced::proxy
