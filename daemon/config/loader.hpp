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

// What a config may be at most: bytes in its file, and YAML nodes (scalars, lists, mappings) in it. A
// 100,000-route config (one listen address and one backend each) is about 10 MB and 1,000,000 nodes;
// YAML parsing takes a few hundred bytes of memory per node, which the node cap bounds.
inline constexpr std::size_t max_config_bytes = 32u << 20;
inline constexpr std::size_t max_config_nodes = 4'000'000;

// Loads and validates a config file; throws config_error. The file must be a regular file of at most
// max_config_bytes. Backend hostnames go through `resolve`; without one they are refused. A file path in
// log.access_log must open for appending (it is created if missing, its directory never).
config load_file(const std::string& path, const resolver& resolve = {});

// Same, from text; `source` names it in errors. Opens no file.
config load_string(std::string_view yaml, const std::string& source, const resolver& resolve = {});

// "250ms", "2s", "5m", "1h", "1d" (also combined: "1m30s"); nullopt when malformed.
std::optional<std::chrono::milliseconds> parse_duration(std::string_view text);

// "1.2.3.4:80", "[::1]:80"; IP literals only. nullopt when malformed.
std::optional<address> parse_address(std::string_view text);

// "10.0.0.0/8", "2001:db8::/32", "192.0.2.7" (a host); the network, or what is wrong with the text.
std::variant<cidr, std::string> parse_cidr(std::string_view text);

}  // namespace spliced::config
