// Resolving a backend's hostname (at start and reload): every IPv4 and IPv6 address it has.
#include "net/resolve.hpp"

#include <cstdint>

#include <arpa/inet.h>
#include <netdb.h>

namespace spliced::net {

std::variant<std::vector<address>, std::string> resolve_host(const std::string& host, std::uint16_t port) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    addrinfo* found = nullptr;
    if (int rc = ::getaddrinfo(host.c_str(), nullptr, &hints, &found); rc != 0)
        return std::string(rc == EAI_SYSTEM ? "system error" : ::gai_strerror(rc));
    std::vector<address> out;
    for (auto* ai = found; ai; ai = ai->ai_next)
        if (auto a = address::from(ai->ai_addr); !a.empty()) out.push_back(a.with_port(port));
    ::freeaddrinfo(found);
    return out;
}

}  // namespace spliced::net
