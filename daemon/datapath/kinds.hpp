// The data paths' vocabulary: which path a connection runs on, why it stayed off sockmap, how it ended.
// Small on purpose: metrics and the access log include it, and nothing else of datapath/.
#pragma once

#include "sys/enum_names.hpp"

#include <cstddef>

namespace spliced::datapath {

// The data path a connection actually runs on.
enum class kind { sockmap, splice, copy };

// Why a pair meant for the sockmap path (a sockmap route, or an auto promotion) stayed off it:
// the map was at capacity, a socket was no longer ESTABLISHED, the sender never let its queue run
// dry, or another error. The `reason` label of spliced_sockmap_fallbacks_total.
enum class fallback_reason { map_full, not_established, busy_sender, error };

// How a proxied pair ended. Every reason but `completed` closes both sockets with a reset: a peer
// sees a clean FIN only after the complete stream its other side sent.
enum class end_reason { completed, idle_timeout, client_reset, upstream_reset, error, shutdown, lifetime };

}  // namespace spliced::datapath

namespace spliced::sys {
template <>
struct enum_names<datapath::kind> {
    static constexpr std::array table{std::pair{datapath::kind::sockmap, "sockmap"},
                                      std::pair{datapath::kind::splice, "splice"},
                                      std::pair{datapath::kind::copy, "copy"}};
};
template <>
struct enum_names<datapath::fallback_reason> {
    static constexpr std::array table{std::pair{datapath::fallback_reason::map_full, "map_full"},
                                      std::pair{datapath::fallback_reason::not_established, "not_established"},
                                      std::pair{datapath::fallback_reason::busy_sender, "busy_sender"},
                                      std::pair{datapath::fallback_reason::error, "error"}};
};
template <>
struct enum_names<datapath::end_reason> {
    static constexpr std::array table{std::pair{datapath::end_reason::completed, "completed"},
                                      std::pair{datapath::end_reason::idle_timeout, "idle_timeout"},
                                      std::pair{datapath::end_reason::client_reset, "client_reset"},
                                      std::pair{datapath::end_reason::upstream_reset, "upstream_reset"},
                                      std::pair{datapath::end_reason::error, "error"},
                                      std::pair{datapath::end_reason::shutdown, "shutdown"},
                                      std::pair{datapath::end_reason::lifetime, "lifetime"}};
};
}  // namespace spliced::sys

namespace spliced::datapath {
inline const char* to_string(kind k) { return sys::name_of(k); }
inline const char* to_string(fallback_reason r) { return sys::name_of(r); }
inline const char* to_string(end_reason r) { return sys::name_of(r); }
inline constexpr std::size_t fallback_reason_count = sys::enum_count<fallback_reason>;
}  // namespace spliced::datapath
