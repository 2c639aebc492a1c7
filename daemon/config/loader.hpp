// Reads a spliced YAML config file into config structs, refusing anything unknown or invalid with its position.
#pragma once

#include "config/config.hpp"

#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>

namespace spliced::config {

// A refused config; what() is "file:line:col: message" (line and column 1-based).
class config_error : public std::runtime_error {
public:
    config_error(std::string file, int line, int column, const std::string& message);
    const std::string& file() const { return file_; }
    int line() const { return line_; }
    int column() const { return column_; }
    const std::string& message() const { return message_; }

private:
    std::string file_;
    int line_;
    int column_;
    std::string message_;
};

// Turns a backend's hostname into its addresses (all of them, each with `port`), or says why it cannot.
using resolver = std::function<std::variant<std::vector<address>, std::string>(const std::string& host,
                                                                               std::uint16_t port)>;

// Loads and validates a config file; throws config_error. Backend hostnames go through `resolve`;
// without one they are refused.
config load_file(const std::string& path, const resolver& resolve = {});

// Same, from text; `source` names it in errors.
config load_string(std::string_view yaml, const std::string& source, const resolver& resolve = {});

// "250ms", "2s", "5m", "1h", "1d" (also combined: "1m30s"); nullopt when malformed.
std::optional<std::chrono::milliseconds> parse_duration(std::string_view text);

// "1.2.3.4:80", "[::1]:80"; IP literals only. nullopt when malformed.
std::optional<address> parse_address(std::string_view text);

// "10.0.0.0/8", "2001:db8::/32", "192.0.2.7" (a host); the network, or what is wrong with the text.
std::variant<cidr, std::string> parse_cidr(std::string_view text);

}  // namespace spliced::config
