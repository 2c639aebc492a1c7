// SNI names as a config writes them: normal form and pattern validation.
#include "config/sni.hpp"

namespace spliced::config {

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

}  // namespace spliced::config
