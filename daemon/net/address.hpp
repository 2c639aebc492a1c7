// One address value type: an IPv4 or IPv6 socket address (an IP and a TCP port), as the config, the PROXY
// protocol, the balancers, the ACLs and the sockets all use it. Pure: no I/O, no Asio.
#pragma once

#include <array>
#include <cstdint>
#include <netinet/in.h>
#include <span>
#include <string>
#include <sys/socket.h>

namespace spliced::net {

class address {
public:
    address() = default;  // empty: no family
    static address v4(const std::array<std::uint8_t, 4>& ip, std::uint16_t port);
    static address v6(const std::array<std::uint8_t, 16>& ip, std::uint16_t port);
    // From a socket address; empty unless it is AF_INET or AF_INET6.
    static address from(const sockaddr* sa);

    bool empty() const { return storage_.ss_family != AF_INET && storage_.ss_family != AF_INET6; }
    int family() const { return storage_.ss_family; }
    bool is_v6() const { return storage_.ss_family == AF_INET6; }
    std::uint16_t port() const;
    // The IP's bytes in network order: 4 for IPv4, 16 for IPv6 (empty when empty).
    std::span<const std::uint8_t> ip() const;
    // The same IP with another port.
    address with_port(std::uint16_t port) const;
    // ::ffff:a.b.c.d for an IPv4 address; an IPv6 one as it is.
    address as_v6() const;
    // An IPv4-mapped IPv6 address as the IPv4 one; any other as it is.
    address unmapped() const;

    const sockaddr* data() const { return reinterpret_cast<const sockaddr*>(&storage_); }
    socklen_t size() const;

    // "1.2.3.4:80", "[2001:db8::1]:443" ("-" when empty).
    std::string text() const;
    // "1.2.3.4", "2001:db8::1".
    std::string ip_text() const;

    friend bool operator==(const address& a, const address& b);

private:
    sockaddr_storage storage_{};
};

}  // namespace spliced::net
