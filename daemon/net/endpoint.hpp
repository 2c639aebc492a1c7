// Asio endpoints: from config addresses, and as log text.
#pragma once

#include "config/config.hpp"
#include "net/asio.hpp"

#include <cstring>
#include <fmt/format.h>
#include <string>

namespace spliced::net {

inline tcp::endpoint to_endpoint(const config::address& a) {
    tcp::endpoint ep;
    std::memcpy(ep.data(), &a.storage, a.length);
    ep.resize(a.length);
    return ep;
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
