// A route's max_connections: open client connections at once, shared by every worker. Accept loops
// wait for room rather than accept (clients stay in the listen queue); the count never exceeds the limit.
#pragma once

#include "net/listener.hpp"
#include "net/wakeup.hpp"

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

namespace spliced::proxy {

class admission final : public net::admit_gate {
public:
    explicit admission(std::uint32_t limit) : limit_(limit) {}
    // Takes a place if there is one.
    bool try_admit() override;
    // Gives a place back (a connection ended) and wakes whoever waits for one.
    void release() override;
    // On the caller's executor: returns once there may be room (check with try_admit()), or at `deadline`.
    net::awaitable<void> wait_for_room(std::chrono::steady_clock::time_point deadline) override;
    void call_when_room(std::function<void()> f) override;
    // A reload's new max_connections; connections over a lowered limit run on, new ones wait.
    void set_limit(std::uint32_t limit);

private:
    // Wakes every wait_for_room() (under mutex_ for the list; see wait_for_room()).
    void wake_waiting();
    std::atomic<std::uint32_t> limit_;
    std::atomic<std::uint32_t> open_{0};
    std::mutex mutex_;
    std::vector<std::shared_ptr<net::wakeup>> waiting_;
    std::vector<std::function<void()>> room_calls_;
};

}  // namespace spliced::proxy
