// Backend selection: the order in which a new connection tries a route's backends.
#pragma once

#include <atomic>
#include <cstddef>

namespace spliced::proxy {

// Round robin: each connection starts one backend further; failures move on to the next.
class round_robin {
public:
    explicit round_robin(std::size_t backends) : size_(backends) {}
    // Index of the backend to try first.
    std::size_t first();
    // Index to try after `current` failed.
    std::size_t after(std::size_t current) const { return (current + 1) % size_; }
    std::size_t size() const { return size_; }

private:
    std::size_t size_;
    std::atomic<std::size_t> next_{0};
};

}  // namespace spliced::proxy
