// Plain configuration structs: what a validated spliced YAML file says, with no I/O.
#pragma once

#include "net/address.hpp"
#include "sys/enum_names.hpp"

#include <array>
#include <chrono>
#include <cstdint>
#include <netinet/in.h>
#include <optional>
#include <string>
#include <sys/socket.h>
#include <vector>

namespace spliced::config {

enum class datapath_kind { auto_select, sockmap, splice, copy };

// An IPv4 or IPv6 socket address, as parsed from "1.2.3.4:80" or "[::1]:80".
using address = net::address;

struct backend {
    std::string name;    // its address as text ("ip:port" / "[ip]:port"): its name in logs, metrics, state keys
    address addr;        // a hostname entry becomes one backend per resolved address, in a stable order
    unsigned weight = 1;  // 0..256; 0 takes no new connections (drain)
    std::uint32_t max_connections = 0;  // open connections at once; 0 = no limit
};

enum class balance_kind { round_robin, least_conn, random, source_hash };

// Active health checks of a route's backends.
struct health_check {
    std::chrono::milliseconds interval{5000};
    std::chrono::milliseconds timeout{1000};
    unsigned rise = 2;
    unsigned fall = 3;
    std::string send;    // written once connected (may be empty)
    std::string expect;  // the reply must start with these bytes (empty: connecting is enough)
    std::uint16_t port = 0;  // 0: each backend's own port
};

// Passive health: `failures` consecutive failed connects from real traffic mark a backend down,
// until an active check passes or, without active checks, for `eject`.
struct passive_health {
    unsigned failures = 3;
    std::chrono::milliseconds eject{30 * 1000};
};

// An IPv4 or IPv6 network, as parsed from "10.0.0.0/8" or "2001:db8::/32" (a bare address is /32 or /128).
struct cidr {
    int family = AF_INET;
    std::array<std::uint8_t, 16> prefix{};  // network byte order; 4 bytes used for IPv4
    unsigned bits = 0;
    std::string text;
    // True when `addr` (IPv4, IPv6, or IPv4-mapped IPv6 for an IPv4 network) is inside.
    bool contains(const address& addr) const;
};

// TCP keepalive on a route's client and upstream sockets: the first probe after `idle` without traffic, then one
// every `interval`; `count` unanswered probes reset the connection. Whole seconds (the kernel's unit).
struct keepalive {
    std::chrono::seconds idle{60};
    std::chrono::seconds interval{10};
    unsigned count = 6;
};

struct route_timeouts {
    std::chrono::milliseconds connect{2000};
    std::chrono::milliseconds idle{3600 * 1000};
    std::chrono::milliseconds handshake{5000};  // the preamble (PROXY header, ClientHello) must arrive within it
    std::chrono::milliseconds queue{5000};      // longest wait for a backend slot when all are full
    std::chrono::milliseconds lifetime{0};      // older connections are reset on both sides; 0: no limit
};

enum class proxy_protocol_version { off, v1, v2 };

struct route {
    std::string name;
    std::vector<address> listen;
    bool datapath_set = false;  // true when the route overrides the global datapath
    datapath_kind datapath = datapath_kind::auto_select;
    route_timeouts timeouts;
    // match.sni: TLS server names (exact, or "*.suffix") this route takes on a listen address it shares
    // with other routes; empty: the address's default route. Lower-cased, no trailing dot.
    std::vector<std::string> sni;
    bool accept_proxy_protocol = false;  // every client starts with a PROXY v1 or v2 header
    std::vector<cidr> trusted_proxies;   // with accept_proxy_protocol: only these sources (empty: any)
    // The clients this route serves (the accepted PROXY header's source, else the socket's peer): those in
    // `allow` (empty: every one) and in no network of `deny`.
    std::vector<cidr> allow, deny;
    std::optional<spliced::config::keepalive> keepalive;  // absent: the system's (off unless the peer's stack asks)
    proxy_protocol_version send_proxy_protocol = proxy_protocol_version::off;
    balance_kind balance = balance_kind::round_robin;
    std::uint32_t max_connections = 0;          // open client connections at once; 0 = no limit
    std::optional<config::health_check> health_check;
    std::optional<passive_health> passive;
    std::vector<backend> backends;
};

struct metrics_config {
    bool enabled = false;  // false when no metrics section is given
    address listen;
};

enum class log_level { trace, debug, info, warn, error, critical };

struct log_config {
    log_level level = log_level::info;
    std::string access_log = "stdout";  // "stdout", "off" or a file path
};

// The sockmap data path's BPF maps, sized once at start.
struct sockmap_config {
    // Connections on the sockmap path at once (two map entries each); past it, new ones run on
    // splice. The default is what the BPF object declares (SPLICED_MAP_CAPACITY entries).
    std::uint32_t capacity = 65536;
};

struct config {
    std::string source;  // file the config was read from
    datapath_kind datapath = datapath_kind::auto_select;
    unsigned workers = 0;  // 0 = one per CPU
    std::chrono::milliseconds drain_timeout{30 * 1000};
    metrics_config metrics;
    log_config log;
    sockmap_config sockmap;
    std::vector<route> routes;
};

}  // namespace spliced::config

namespace spliced::sys {
template <>
struct enum_names<config::datapath_kind> {
    static constexpr std::array table{std::pair{config::datapath_kind::auto_select, "auto"},
                                      std::pair{config::datapath_kind::sockmap, "sockmap"},
                                      std::pair{config::datapath_kind::splice, "splice"},
                                      std::pair{config::datapath_kind::copy, "copy"}};
};
template <>
struct enum_names<config::balance_kind> {
    static constexpr std::array table{std::pair{config::balance_kind::round_robin, "round_robin"},
                                      std::pair{config::balance_kind::least_conn, "least_conn"},
                                      std::pair{config::balance_kind::random, "random"},
                                      std::pair{config::balance_kind::source_hash, "source_hash"}};
};
template <>
struct enum_names<config::proxy_protocol_version> {
    static constexpr std::array table{std::pair{config::proxy_protocol_version::off, "off"},
                                      std::pair{config::proxy_protocol_version::v1, "v1"},
                                      std::pair{config::proxy_protocol_version::v2, "v2"}};
};
template <>
struct enum_names<config::log_level> {
    static constexpr std::array table{std::pair{config::log_level::trace, "trace"},
                                      std::pair{config::log_level::debug, "debug"},
                                      std::pair{config::log_level::info, "info"},
                                      std::pair{config::log_level::warn, "warn"},
                                      std::pair{config::log_level::error, "error"},
                                      std::pair{config::log_level::critical, "critical"}};
};
}  // namespace spliced::sys

namespace spliced::config {
inline const char* to_string(datapath_kind k) { return sys::name_of(k); }
inline const char* to_string(balance_kind k) { return sys::name_of(k); }
inline const char* to_string(proxy_protocol_version v) { return sys::name_of(v); }
inline const char* to_string(log_level l) { return sys::name_of(l); }
}  // namespace spliced::config
