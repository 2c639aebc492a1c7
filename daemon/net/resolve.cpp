// Resolving a backend's hostname (at start and reload): every IPv4 and IPv6 address it has.
#include "net/resolve.hpp"

#include "config/loader.hpp"

#include <arpa/inet.h>
#include <netdb.h>

namespace spliced::net {

std::variant<std::vector<config::address>, std::string> resolve_host(const std::string& host, std::uint16_t port) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    addrinfo* found = nullptr;
    if (int rc = ::getaddrinfo(host.c_str(), nullptr, &hints, &found); rc != 0)
        return std::string(rc == EAI_SYSTEM ? "system error" : ::gai_strerror(rc));
    std::vector<config::address> out;
    for (auto* ai = found; ai; ai = ai->ai_next) {
        char buf[INET6_ADDRSTRLEN] = {};
        std::string text;
        if (ai->ai_family == AF_INET) {
            ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(ai->ai_addr)->sin_addr, buf, sizeof(buf));
            text = std::string(buf) + ":" + std::to_string(port);
        } else if (ai->ai_family == AF_INET6) {
            ::inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(ai->ai_addr)->sin6_addr, buf, sizeof(buf));
            text = "[" + std::string(buf) + "]:" + std::to_string(port);
        } else {
            continue;
        }
        if (auto a = config::parse_address(text)) out.push_back(std::move(*a));
    }
    ::freeaddrinfo(found);
    return out;
}

}  // namespace spliced::net
