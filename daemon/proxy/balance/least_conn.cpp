// Least connections: the eligible backend with the fewest open connections per unit of weight. Ties go
// round robin over backend indices, so an idle pool (all at 0) is spread evenly rather than all sent to
// the first backend.
#include "proxy/balance/algorithms.hpp"

namespace spliced::proxy::balance {

namespace {

// a.active/a.weight < b.active/b.weight, cross-multiplied to stay exact. Weights are at most 256, so the
// products only overflow past 2^56 open connections.
bool fewer(const candidate& a, const candidate& b) { return a.active * b.weight < b.active * a.weight; }
bool same(const candidate& a, const candidate& b) { return a.active * b.weight == b.active * a.weight; }

}  // namespace

std::size_t least_connections::pick(std::span<const candidate> eligible, const client_key&) {
    std::size_t least = 0;  // the first of the tied least loaded, in index order
    for (std::size_t i = 1; i < eligible.size(); ++i)
        if (fewer(eligible[i], eligible[least])) least = i;
    // The first tied one at or after the cursor; none there wraps round to the first tied one.
    std::size_t chosen = least;
    for (std::size_t i = least; i < eligible.size(); ++i) {
        if (eligible[i].index >= cursor_ && same(eligible[i], eligible[least])) {
            chosen = i;
            break;
        }
    }
    cursor_ = eligible[chosen].index + 1;
    return chosen;
}

}  // namespace spliced::proxy::balance
