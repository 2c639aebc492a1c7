// The one entry from the session into the data paths: runs a connected pair on the path its route planned.
#pragma once

#include "datapath/datapath.hpp"

#include <cstdint>
#include <span>
#include <string_view>

namespace spliced::datapath {

class sockmap_engine;

// What a route's connections run on, decided at startup.
struct plan {
    kind path = kind::copy;           // sockmap, splice or copy
    bool promote_to_sockmap = false;  // auto with sockmap usable: splice first, then sockmap once idle
};

// What engage() tells its caller as it happens (for its counters): the first path the pair was handed to,
// a pair kept off sockmap, an auto promotion, a sockmap direction demoted to userspace copy.
class engage_events {
public:
    virtual void handed_off(kind k) = 0;
    virtual void stayed_off_sockmap(fallback_reason why) = 0;
    virtual void promoted() = 0;
    virtual void demoted() = 0;

protected:
    ~engage_events() = default;
};

// Hands the pair to its data path and runs it until both directions end or the pair aborts: on
// sockmap, forwards what is already queued, inserts the pair (or falls back to splice or copy,
// counted), runs it and removes it from the maps; on splice, takes pipes (or runs on copy when none
// can be made); with promotion, moves a quiet pair to sockmap. Counts the hand-off, promotions,
// fallbacks and demotions through `events`; records every path used in p.paths. `pending` goes to the upstream
// before any byte of the client (a PROXY header to send).
net::awaitable<void> engage(pair_state& p, const plan& pl, sockmap_engine* engine, engage_events& events,
                            std::uint64_t id, std::string_view route, std::span<const std::uint8_t> pending = {});

}  // namespace spliced::datapath
