// Asio endpoints: to and from net::address, a socket's addresses, and endpoints as log text.
#pragma once

#include "net/address.hpp"
#include "net/asio.hpp"

#include <cstring>
#include <fmt/format.h>
#include <string>

namespace spliced::net {

inline tcp::endpoint to_endpoint(const address& a) {
    tcp::endpoint ep;
    std::memcpy(ep.data(), a.data(), a.size());
    ep.resize(a.size());
    return ep;
}

inline address from_endpoint(const tcp::endpoint& ep) { return address::from(ep.data()); }

// The peer's (remote) or the local address of a socket; empty when the socket has none (reset, closed).
inline address peer_of(const tcp::socket& s) {
    boost::system::error_code ec;
    auto ep = s.remote_endpoint(ec);
    return ec ? address() : from_endpoint(ep);
}
inline address local_of(const tcp::socket& s) {
    boost::system::error_code ec;
    auto ep = s.local_endpoint(ec);
    return ec ? address() : from_endpoint(ep);
}

// The same for a socket descriptor.
inline address peer_of(int fd) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    return ::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0 ? address::from(reinterpret_cast<sockaddr*>(&ss))
                                                                          : address();
}
inline address local_of(int fd) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    return ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0 ? address::from(reinterpret_cast<sockaddr*>(&ss))
                                                                          : address();
}

}  // namespace spliced::net

// "1.2.3.4:80" / "[::1]:80" for endpoints in log lines.
template <>
struct fmt::formatter<boost::asio::ip::tcp::endpoint> : fmt::formatter<std::string> {
    template <typename Ctx>
    auto format(const boost::asio::ip::tcp::endpoint& ep, Ctx& ctx) const {
        auto a = ep.address();
        std::string s = a.is_v6() ? "[" + a.to_string() + "]:" + std::to_string(ep.port())
                                  : a.to_string() + ":" + std::to_string(ep.port());
        return fmt::formatter<std::string>::format(s, ctx);
    }
};
