// Pure parsers of the config's values: durations, addresses, networks. No I/O.
#pragma once

#include "config/config.hpp"

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

namespace spliced::config {

// "250ms", "2s", "5m", "1h", "1d" (also combined: "1m30s"); nullopt when malformed.
std::optional<std::chrono::milliseconds> parse_duration(std::string_view text);

// "1.2.3.4:80", "[::1]:80"; IP literals only. nullopt when malformed.
std::optional<address> parse_address(std::string_view text);
// The same, or what is wrong with the text.
std::variant<address, std::string> parse_address_or_reason(std::string_view text);

// "10.0.0.0/8", "2001:db8::/32", "192.0.2.7" (a host); the network, or what is wrong with the text.
std::variant<cidr, std::string> parse_cidr(std::string_view text);

}  // namespace spliced::config
