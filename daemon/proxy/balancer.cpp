// Backend selection: the order in which a new connection tries a route's backends.
#include "proxy/balancer.hpp"

namespace spliced::proxy {

std::size_t round_robin::first() { return next_.fetch_add(1, std::memory_order_relaxed) % size_; }

}  // namespace spliced::proxy
