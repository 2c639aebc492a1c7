// Reads a spliced YAML config file into config structs, refusing anything unknown or invalid with its position.
#pragma once

#include "config/config.hpp"
#include "config/error.hpp"
#include "config/parsers.hpp"

#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>

namespace spliced::config {

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

}  // namespace spliced::config
