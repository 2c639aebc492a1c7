// Who a route refuses before it reads a byte or connects a backend: its allow and deny lists, judged on the
// client address; the `reason` a refusal is counted under.
#pragma once

#include "config/config.hpp"
#include "sys/enum_names.hpp"

#include <cstdint>

namespace spliced::proxy {

// Why a connection was refused (the `reason` label of spliced_connections_refused_total).
enum class refusal : std::uint8_t { acl, source_connections, source_rate, accept_rate };

// Whether `r` serves `client`: in `allow` (or no allow list) and in no network of `deny` (deny wins).
bool admits(const config::route& r, const config::address& client);

}  // namespace spliced::proxy

namespace spliced::sys {
template <>
struct enum_names<proxy::refusal> {
    using e = proxy::refusal;
    static constexpr std::array table{std::pair{e::acl, "acl"}, std::pair{e::source_connections, "source_connections"},
                                      std::pair{e::source_rate, "source_rate"},
                                      std::pair{e::accept_rate, "accept_rate"}};
};
}  // namespace spliced::sys
