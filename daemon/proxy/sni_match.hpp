// SNI route matching: exact names and `*.suffix` wildcards, compared case-insensitively without a trailing dot.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace spliced::proxy {

// The SNI patterns of the routes sharing one listen address. An exact name wins over any wildcard, a longer
// wildcard over a shorter one; `*.example.com` matches `a.example.com` and `a.b.example.com`, not
// `example.com`.
class sni_table {
public:
    // Adds `pattern` for route `route`. Returns a message naming the pattern, and changes nothing, when the
    // pattern is invalid or already in the table (after normalization).
    std::optional<std::string> add(std::string_view pattern, std::size_t route);
    // The route of the best pattern matching `name`, if any.
    std::optional<std::size_t> match(std::string_view name) const;
    std::size_t size() const { return exact_.size() + wildcard_.size(); }

private:
    std::unordered_map<std::string, std::size_t> exact_;     // "www.example.com"
    std::unordered_map<std::string, std::size_t> wildcard_;  // ".example.com" for "*.example.com"
};

}  // namespace spliced::proxy
