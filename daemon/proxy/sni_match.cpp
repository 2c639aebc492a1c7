// SNI route matching: exact names and `*.suffix` wildcards, compared case-insensitively without a trailing dot.
#include "proxy/sni_match.hpp"

namespace spliced::proxy {

namespace {

constexpr std::size_t max_name = 253;
constexpr std::size_t max_label = 63;

bool is_ldh(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'; }

// Why `name` (normalized, no wildcard) is not a host name of LDH labels; empty when it is one.
std::string host_name_problem(std::string_view name) {
    if (name.empty()) return "is empty";
    if (name.size() > max_name) return "is longer than 253 characters";
    std::size_t start = 0;
    while (true) {
        const std::size_t dot = name.find('.', start);
        const std::string_view label = name.substr(start, dot == std::string_view::npos ? name.npos : dot - start);
        if (label.empty()) return "has an empty label";
        if (label.size() > max_label) return "has a label longer than 63 characters";
        for (char c : label) {
            if (c == '*') return "may hold '*' only as its whole first label (\"*.example.com\")";
            if (!is_ldh(c)) return "may hold only letters, digits, '-' and '.'";
        }
        if (label.front() == '-' || label.back() == '-') return "has a label that starts or ends with '-'";
        if (dot == std::string_view::npos) return {};
        start = dot + 1;
    }
}

}  // namespace

std::string normalize_sni(std::string_view name) {
    std::string out(name);
    for (char& c : out) {
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    }
    if (!out.empty() && out.back() == '.') out.pop_back();
    return out;
}

std::optional<std::string> validate_sni_pattern(std::string_view pattern) {
    const std::string normal = normalize_sni(pattern);
    const std::string_view name = std::string_view(normal).starts_with("*.") ? std::string_view(normal).substr(2)
                                                                              : std::string_view(normal);
    std::string problem = host_name_problem(name);
    if (problem.empty()) return std::nullopt;
    return "SNI pattern \"" + std::string(pattern) + "\" " + problem;
}

std::optional<std::string> sni_table::add(std::string_view pattern, std::size_t route) {
    if (auto problem = validate_sni_pattern(pattern)) return problem;
    std::string normal = normalize_sni(pattern);
    const bool wildcard = normal.starts_with("*.");
    auto& map = wildcard ? wildcard_ : exact_;
    std::string key = wildcard ? normal.substr(1) : normal;  // "*.example.com" -> ".example.com"
    if (!map.emplace(std::move(key), route).second) {
        return "SNI pattern \"" + std::string(pattern) + "\" is listed twice on this address";
    }
    return std::nullopt;
}

std::optional<std::size_t> sni_table::match(std::string_view name) const {
    const std::string normal = normalize_sni(name);
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
