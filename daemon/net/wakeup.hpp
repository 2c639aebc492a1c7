// A wait that one worker thread sits in and any thread may end: how a slot freed on one worker reaches
// a connection waiting for it on another.
#pragma once

#include "net/asio.hpp"
#include "net/event_core.hpp"

#include <atomic>
#include <chrono>
#include <memory>

namespace spliced::net {

class wakeup : public std::enable_shared_from_this<wakeup> {
public:
    // On the owner's thread: its event core (if it runs one) is how other threads reach it.
    explicit wakeup(asio::any_io_executor ex) : timer_(std::move(ex)), core_(event_core::current()) {}
    // From any thread: ends the current (or the next) wait().
    void wake() {
        woken_.store(true, std::memory_order_release);
        auto cancel = [self = shared_from_this()] {
            self->timer_.cancel();
            if (self->core_) self->core_->asio_work_pending();
        };
        if (core_) core_->post(std::move(cancel));
        else asio::post(timer_.get_executor(), std::move(cancel));
    }
    // On the owner's executor: until woken or `deadline`; true when woken. A wake() that came before
    // the wait counts (nothing is lost between checking a condition and waiting); a stale one may end
    // a later wait early, so callers check their condition again.
    awaitable<bool> wait(std::chrono::steady_clock::time_point deadline) {
        if (woken_.exchange(false, std::memory_order_acq_rel)) co_return true;
        timer_.expires_at(deadline);
        co_await timer_.async_wait(use_tuple);
        co_return woken_.exchange(false, std::memory_order_acq_rel);
    }

private:
    asio::steady_timer timer_;
    event_core* core_;
    std::atomic<bool> woken_{false};
};

}  // namespace spliced::net
