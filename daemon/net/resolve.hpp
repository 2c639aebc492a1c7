// Resolving a backend's hostname (at start and reload): every IPv4 and IPv6 address it has.
#pragma once

#include "net/address.hpp"

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

namespace spliced::net {

// getaddrinfo() for TCP; each address with `port`, its text normalised like the config's. The error
// text when the name does not resolve.
std::variant<std::vector<address>, std::string> resolve_host(const std::string& host, std::uint16_t port);

}  // namespace spliced::net
