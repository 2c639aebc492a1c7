// What the session and the data paths agree on: the plan a route's connections run on, what a pair tells
// its session as it runs, and what every pair of one worker shares.
#pragma once

#include "datapath/kinds.hpp"
#include "datapath/pipe_pool.hpp"
#include "datapath/direction.hpp"

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string_view>

namespace spliced::net {
class event_core;
}

namespace spliced::datapath {

class sockmap_engine;

// What a route's connections run on, decided at startup.
struct plan {
    kind path = kind::copy;           // sockmap, splice or copy
    bool promote_to_sockmap = false;  // auto with sockmap usable: userspace first, sockmap for pairs that idle
};

// What a pair tells its session as it happens (for its counters), and when it is over.
class pair_owner {
public:
    virtual void handed_off(kind k) = 0;                      // the path it started on (once)
    virtual void stayed_off_sockmap(fallback_reason why) = 0;  // meant for sockmap, it stayed off
    virtual void promoted() = 0;                               // auto moved it to sockmap
    virtual void demoted() = 0;                                // a sockmap direction went back to userspace
    // The pair is over (both directions ended, or it aborted): its report() says how. Called once, as the last
    // thing the pair does; the owner may close the sockets and let the pair go (at the end of the core's turn:
    // see net::retirable).
    virtual void pair_ended() = 0;

protected:
    ~pair_owner() = default;
};

// What every pair of one worker shares: the event core, the sockmap engine (null when not loaded), the
// pipe pool and the copy buffer.
struct worker_resources {
    worker_resources(net::event_core& c, sockmap_engine* e)
        : core(c), engine(e), buffer(std::make_unique_for_overwrite<std::array<char, copy_buffer_size>>()) {}
    net::event_core& core;
    sockmap_engine* engine;
    pipe_pool pipes;
    std::unique_ptr<std::array<char, copy_buffer_size>> buffer;
};

// One pair's settings, from its route.
struct pair_settings {
    plan how;
    std::chrono::milliseconds idle{0};
    std::uint64_t consumed = 0;  // bytes of the client's stream the preamble took (a PROXY header)
    std::uint64_t id = 0;        // for log lines
    std::string_view route;      // for log lines (the route outlives the pair)
    std::chrono::milliseconds lifetime_left{0};  // the pair is reset on both sides after this; 0: no limit
};

}  // namespace spliced::datapath
