// Conversion from config addresses to Asio endpoints.
#pragma once

#include "config/config.hpp"
#include "net/asio.hpp"

#include <cstring>

namespace spliced::net {

inline tcp::endpoint to_endpoint(const config::address& a) {
    tcp::endpoint ep;
    std::memcpy(ep.data(), &a.storage, a.length);
    ep.resize(a.length);
    return ep;
}

}  // namespace spliced::net
