// What a pair tells its session when it ends: how, on which paths, and how many bytes each way.
#pragma once

#include "datapath/kinds.hpp"

#include <array>
#include <cstdint>
#include <string>

namespace spliced::datapath {

// The data paths one connection ran on, in order ("sockmap+copy" after a demotion, "splice+sockmap"
// after a promotion); what the access log's `datapath` field says.
class path_log {
public:
    // Appends `k` unless it is the path the connection is on already.
    void ran_on(kind k);
    kind first() const { return paths_[0]; }
    kind last() const { return count_ ? paths_[count_ - 1] : paths_[0]; }
    bool empty() const { return count_ == 0; }
    std::string text() const;  // "-" when empty

private:
    std::array<kind, 4> paths_{};
    std::uint8_t count_ = 0;
};

struct pair_report {
    end_reason reason = end_reason::completed;
    path_log paths;
    // Payload bytes each side sent that the pair received (a PROXY header the preamble took is not counted).
    std::uint64_t from_client = 0;
    std::uint64_t from_upstream = 0;
    std::uint64_t demoted_bytes = 0;   // sockmap: bytes userspace copied after a demotion
    std::uint64_t stranded_bytes = 0;  // sockmap: redirected bytes the peer never took (the pair was reset)
    std::uint32_t backlog_nudges = 0;  // sockmap: times a redirect backlog that made no progress was woken
    std::uint64_t unread_at_fin = 0;   // sockmap: passed bytes behind a FIN that never became readable (reset)
};

}  // namespace spliced::datapath
