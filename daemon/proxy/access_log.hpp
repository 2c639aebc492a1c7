// The access log: one record per connection, however it ended, in one format.
#pragma once

#include "datapath/kinds.hpp"
#include "sys/enum_names.hpp"

#include <cstdint>
#include <string>
#include <string_view>

namespace spdlog {
class logger;
}

namespace spliced::proxy {

// How a connection ended (the access log's `end`): how its data path ended (the first seven, as
// datapath::end_reason), or why it never reached one.
enum class session_end {
    completed, idle_timeout, client_reset, upstream_reset, error, shutdown,
    lifetime,          // older than timeouts.lifetime: reset on both sides
    no_backend,        // every backend tried failed, or none could be tried
    queue_timeout,     // waited timeouts.queue for a backend slot or a route place
    bad_proxy_header,  // a PROXY header missing, malformed, too large, unsupported, cut or late
    untrusted,         // a PROXY header route's client from outside trusted_proxies
    no_route,          // an SNI-routed address with no default and no match
    client_closed,     // the client left during the preamble
    refused,           // allow/deny (never in the access log: a flood must not become a log flood)
};

inline session_end ended_as(datapath::end_reason r) { return static_cast<session_end>(r); }

// One connection's line.
struct access_record {
    std::uint64_t id = 0;
    std::string_view route;
    std::string_view client;   // the original client: the accepted PROXY header's source, else the peer
    std::string_view backend;  // "-" when none was reached
    std::string datapath;      // every path in order ("splice+sockmap"), "-" when none
    std::int64_t duration_ms = 0;
    std::uint64_t bytes_in = 0, bytes_out = 0;  // payload from the client, from the backend
    session_end end = session_end::completed;
};

// conn=ID route= client= backend= datapath= duration_ms= bytes_in= bytes_out= end=
void write(spdlog::logger& log, const access_record& r);

}  // namespace spliced::proxy

namespace spliced::sys {
template <>
struct enum_names<proxy::session_end> {
    using e = proxy::session_end;
    static constexpr std::array table{
        std::pair{e::completed, "completed"},         std::pair{e::idle_timeout, "idle_timeout"},
        std::pair{e::client_reset, "client_reset"},   std::pair{e::upstream_reset, "upstream_reset"},
        std::pair{e::error, "error"},                 std::pair{e::shutdown, "shutdown"},
        std::pair{e::lifetime, "lifetime"},
        std::pair{e::no_backend, "no_backend"},       std::pair{e::queue_timeout, "queue_timeout"},
        std::pair{e::bad_proxy_header, "bad_proxy_header"}, std::pair{e::untrusted, "untrusted"},
        std::pair{e::no_route, "no_route"},           std::pair{e::client_closed, "client_closed"},
        std::pair{e::refused, "refused"}};
};
}  // namespace spliced::sys

namespace spliced::proxy {
static_assert(static_cast<int>(session_end::lifetime) == static_cast<int>(datapath::end_reason::lifetime) &&
                  sys::enum_count<datapath::end_reason> == 7,
              "a data path's end reasons are the first session ends, in the same order");
}  // namespace spliced::proxy
