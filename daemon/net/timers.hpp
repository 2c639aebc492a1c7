// The timers of one worker's event core: one min-heap of deadlines for every idle timeout, connect deadline
// and tick of the connections the core runs, instead of a timer object (and a kernel timer) per connection.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace spliced::net {

class timers;

// A deadline in the heap; whoever owns it is called back through fire() once it passes. Destroying or
// cancelling it takes it out. Used from the core's thread only.
class timer {
public:
    timer() = default;
    timer(const timer&) = delete;
    timer& operator=(const timer&) = delete;
    virtual ~timer();
    bool armed() const { return slot_ != none; }
    std::chrono::steady_clock::time_point deadline() const { return deadline_; }

protected:
    virtual void fire() = 0;

private:
    friend class timers;
    static constexpr std::size_t none = SIZE_MAX;
    timers* owner_ = nullptr;
    std::size_t slot_ = none;
    std::chrono::steady_clock::time_point deadline_{};
};

class timers {
public:
    using clock = std::chrono::steady_clock;

    // Arms `t` at `at` (again, if it was armed).
    void arm(timer& t, clock::time_point at);
    void cancel(timer& t);
    // Milliseconds until the earliest deadline (0 if one passed), or -1 when none is armed.
    int next_timeout_ms(clock::time_point now) const;
    // Fires every timer whose deadline passed (each is disarmed before its fire()); returns how many.
    std::size_t fire_expired(clock::time_point now);
    std::size_t size() const { return heap_.size(); }

private:
    void place(std::size_t i, timer* t);
    void up(std::size_t i);
    void down(std::size_t i);
    void remove_at(std::size_t i);

    std::vector<timer*> heap_;
};

// A timer that calls a member function of its owner: `owner_timer<pair, &pair::on_idle>`.
template <typename Owner, void (Owner::*F)()>
class owner_timer final : public timer {
public:
    explicit owner_timer(Owner& o) : owner_(o) {}

private:
    void fire() override { (owner_.*F)(); }
    Owner& owner_;
};

}  // namespace spliced::net
