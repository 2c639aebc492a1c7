// SNI route matching: exact names and `*.suffix` wildcards, compared case-insensitively without a trailing dot.
#include "proxy/sni_match.hpp"

#include "config/sni.hpp"

namespace spliced::proxy {

std::optional<std::string> sni_table::add(std::string_view pattern, std::size_t route) {
    if (auto problem = config::validate_sni_pattern(pattern)) return problem;
    std::string normal = config::normalize_sni(pattern);
    const bool wildcard = normal.starts_with("*.");
    auto& map = wildcard ? wildcard_ : exact_;
    std::string key = wildcard ? normal.substr(1) : normal;  // "*.example.com" -> ".example.com"
    if (!map.emplace(std::move(key), route).second) {
        return "SNI pattern \"" + std::string(pattern) + "\" is listed twice on this address";
    }
    return std::nullopt;
}

std::optional<std::size_t> sni_table::match(std::string_view name) const {
    const std::string normal = config::normalize_sni(name);
    if (normal.empty()) return std::nullopt;
    if (auto it = exact_.find(normal); it != exact_.end()) return it->second;
    // Suffixes from the longest: ".b.example.com", then ".example.com", then ".com"; each needs a label
    // before it, so "*.example.com" never takes "example.com" itself.
    for (std::size_t dot = normal.find('.', 1); dot != std::string::npos; dot = normal.find('.', dot + 1)) {
        if (auto it = wildcard_.find(normal.substr(dot)); it != wildcard_.end()) return it->second;
    }
    return std::nullopt;
}

}  // namespace spliced::proxy
