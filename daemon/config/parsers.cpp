// Pure parsers of the config's values: durations, addresses, networks. No I/O.
#include "config/parsers.hpp"

#include <arpa/inet.h>
#include <cstring>

namespace spliced::config {

bool cidr::contains(const address& addr) const {
    // An IPv4 network takes an IPv4-mapped IPv6 address as the IPv4 one.
    const address a = family == AF_INET ? addr.unmapped() : addr;
    if (a.family() != family) return false;
    const std::uint8_t* bytes = a.ip().data();
    unsigned whole = bits / 8, rest = bits % 8;
    if (std::memcmp(bytes, prefix.data(), whole) != 0) return false;
    if (rest == 0) return true;
    const std::uint8_t mask = static_cast<std::uint8_t>(0xff << (8 - rest));
    return (bytes[whole] & mask) == (prefix[whole] & mask);
}

std::variant<cidr, std::string> parse_cidr(std::string_view text) {
    cidr c;
    c.text = std::string(text);
    std::string host(text.substr(0, text.find('/')));
    const bool v6 = host.find(':') != std::string::npos;
    c.family = v6 ? AF_INET6 : AF_INET;
    if (::inet_pton(c.family, host.c_str(), c.prefix.data()) != 1)
        return "'" + host + "' is not an IP" + (v6 ? "v6" : "v4") + " address";
    const unsigned most = v6 ? 128 : 32;
    c.bits = most;
    if (auto slash = text.find('/'); slash != std::string_view::npos) {
        auto b = text.substr(slash + 1);
        if (b.empty() || b.size() > 3 || b.find_first_not_of("0123456789") != std::string_view::npos)
            return "prefix length '" + std::string(b) + "' is not a number";
        c.bits = static_cast<unsigned>(std::stoul(std::string(b)));
        if (c.bits > most) return "prefix length " + std::to_string(c.bits) + " is over " + std::to_string(most);
    }
    // Host bits set below the prefix are a typo more often than not: refuse them.
    for (unsigned bit = c.bits; bit < most; ++bit)
        if (c.prefix[bit / 8] & (0x80 >> (bit % 8))) return "address has bits set past the /" + std::to_string(c.bits) + " prefix";
    return c;
}

std::optional<std::chrono::milliseconds> parse_duration(std::string_view text) {
    constexpr std::uint64_t limit_ms = 1000ull * 86'400'000;  // 1000 days: far beyond any sane timeout
    if (text.empty()) return std::nullopt;
    std::uint64_t total = 0;
    std::size_t i = 0;
    while (i < text.size()) {
        std::size_t start = i;
        std::uint64_t value = 0;
        while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
            value = value * 10 + static_cast<std::uint64_t>(text[i] - '0');
            if (value > limit_ms) return std::nullopt;
            ++i;
        }
        if (i == start) return std::nullopt;
        std::size_t unit_start = i;
        while (i < text.size() && text[i] >= 'a' && text[i] <= 'z') ++i;
        auto unit = text.substr(unit_start, i - unit_start);
        std::uint64_t scale;
        if (unit == "ms") scale = 1;
        else if (unit == "s") scale = 1000;
        else if (unit == "m") scale = 60'000;
        else if (unit == "h") scale = 3'600'000;
        else if (unit == "d") scale = 86'400'000;
        else return std::nullopt;
        total += value * scale;  // value <= limit_ms and scale <= 1 day: no overflow
        if (total > limit_ms) return std::nullopt;
    }
    return std::chrono::milliseconds(total);
}

std::variant<address, std::string> parse_address_or_reason(std::string_view text) {
    std::string host;
    std::string_view port_text;
    bool v6 = !text.empty() && text.front() == '[';
    if (v6) {
        auto close = text.find(']');
        if (close == std::string_view::npos) return "missing ']' after the IPv6 address";
        if (close + 1 >= text.size() || text[close + 1] != ':') return "missing ':port' after ']'";
        host = std::string(text.substr(1, close - 1));
        port_text = text.substr(close + 2);
    } else {
        auto colon = text.rfind(':');
        if (colon == std::string_view::npos) return "missing ':port'";
        host = std::string(text.substr(0, colon));
        port_text = text.substr(colon + 1);
    }
    if (port_text.empty()) return "missing port after ':'";
    if (port_text.find_first_not_of("0123456789") != std::string_view::npos) return "port is not a number";
    if (port_text.size() > 5) return "port is out of range 1-65535";
    unsigned port = 0;
    for (char c : port_text) port = port * 10 + static_cast<unsigned>(c - '0');
    if (port == 0 || port > 65535) return "port " + std::to_string(port) + " is out of range 1-65535";

    if (v6) {
        std::array<std::uint8_t, 16> ip{};
        if (::inet_pton(AF_INET6, host.c_str(), ip.data()) != 1) return "'" + host + "' is not an IPv6 address";
        return address::v6(ip, static_cast<std::uint16_t>(port));
    }
    std::array<std::uint8_t, 4> ip{};
    if (::inet_pton(AF_INET, host.c_str(), ip.data()) != 1) {
        if (host.find(':') != std::string::npos) return "IPv6 addresses need brackets, e.g. [::1]:80";
        bool named = host.find_first_not_of("0123456789.") != std::string::npos;
        return "'" + host + "' is not an IP address" + (named ? " (hostnames are not resolved)" : "");
    }
    return address::v4(ip, static_cast<std::uint16_t>(port));
}

std::optional<address> parse_address(std::string_view text) {
    auto parsed = parse_address_or_reason(text);
    if (auto* a = std::get_if<address>(&parsed)) return std::move(*a);
    return std::nullopt;
}

}  // namespace spliced::config
