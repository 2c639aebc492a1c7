// One address value type: an IPv4 or IPv6 socket address.
#include "net/address.hpp"

#include <arpa/inet.h>
#include <algorithm>
#include <cstring>

namespace spliced::net {

namespace {

const sockaddr_in& in4(const sockaddr_storage& s) { return reinterpret_cast<const sockaddr_in&>(s); }
const sockaddr_in6& in6(const sockaddr_storage& s) { return reinterpret_cast<const sockaddr_in6&>(s); }

}  // namespace

address address::v4(const std::array<std::uint8_t, 4>& ip, std::uint16_t port) {
    address a;
    auto& sa = reinterpret_cast<sockaddr_in&>(a.storage_);
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    std::memcpy(&sa.sin_addr, ip.data(), 4);
    return a;
}

address address::v6(const std::array<std::uint8_t, 16>& ip, std::uint16_t port) {
    address a;
    auto& sa = reinterpret_cast<sockaddr_in6&>(a.storage_);
    sa.sin6_family = AF_INET6;
    sa.sin6_port = htons(port);
    std::memcpy(&sa.sin6_addr, ip.data(), 16);
    return a;
}

address address::from(const sockaddr* sa) {
    address a;
    if (!sa) return a;
    if (sa->sa_family == AF_INET) std::memcpy(&a.storage_, sa, sizeof(sockaddr_in));
    else if (sa->sa_family == AF_INET6) std::memcpy(&a.storage_, sa, sizeof(sockaddr_in6));
    return a;
}

std::uint16_t address::port() const {
    if (is_v6()) return ntohs(in6(storage_).sin6_port);
    if (family() == AF_INET) return ntohs(in4(storage_).sin_port);
    return 0;
}

std::span<const std::uint8_t> address::ip() const {
    if (is_v6()) return {reinterpret_cast<const std::uint8_t*>(&in6(storage_).sin6_addr), 16};
    if (family() == AF_INET) return {reinterpret_cast<const std::uint8_t*>(&in4(storage_).sin_addr), 4};
    return {};
}

address address::with_port(std::uint16_t port) const {
    address a = *this;
    if (a.is_v6()) reinterpret_cast<sockaddr_in6&>(a.storage_).sin6_port = htons(port);
    else if (a.family() == AF_INET) reinterpret_cast<sockaddr_in&>(a.storage_).sin_port = htons(port);
    return a;
}

address address::as_v6() const {
    if (family() != AF_INET) return *this;
    std::array<std::uint8_t, 16> ip6{};
    ip6[10] = ip6[11] = 0xff;
    std::memcpy(ip6.data() + 12, ip().data(), 4);
    return v6(ip6, port());
}

address address::unmapped() const {
    if (!is_v6() || !IN6_IS_ADDR_V4MAPPED(&in6(storage_).sin6_addr)) return *this;
    std::array<std::uint8_t, 4> ip4{};
    std::memcpy(ip4.data(), ip().data() + 12, 4);
    return v4(ip4, port());
}

socklen_t address::size() const {
    if (is_v6()) return sizeof(sockaddr_in6);
    if (family() == AF_INET) return sizeof(sockaddr_in);
    return 0;
}

std::string address::ip_text() const {
    if (empty()) return "-";
    char buf[INET6_ADDRSTRLEN] = {};
    ::inet_ntop(family(), ip().data(), buf, sizeof(buf));
    return buf;
}

std::string address::text() const {
    if (empty()) return "-";
    return (is_v6() ? "[" + ip_text() + "]" : ip_text()) + ":" + std::to_string(port());
}

bool operator==(const address& a, const address& b) {
    if (a.family() != b.family()) return false;
    if (a.empty()) return true;
    const auto x = a.ip(), y = b.ip();
    return a.port() == b.port() && std::equal(x.begin(), x.end(), y.begin(), y.end());
}

}  // namespace spliced::net
