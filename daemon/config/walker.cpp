// Walking a config's YAML: keys checked, values read as the config's kinds, errors with positions.
#include "config/walker.hpp"

#include "config/parsers.hpp"

#include <algorithm>
#include <variant>

namespace spliced::config {

const char* kind_of(const yaml::node& n) {
    if (n.IsSequence()) return "a list";
    if (n.IsMap()) return "a mapping";
    if (n.IsNull()) return "nothing";
    return "a single value";
}

void walker::fail(const yaml::node& at, const std::string& message) const {
    auto m = at.Mark();
    throw config_error(source_, m.line + 1, m.column + 1, message);
}

yaml::node walker::value(const field& f) const {
    if (f.value.IsNull()) fail(f.key, f.what + " needs a value");
    return f.value;
}

yaml::node walker::map_value(const field& f) const {
    const yaml::node v = value(f);
    if (!v.IsMap()) fail(v, f.what + " must be a mapping, not " + kind_of(v));
    return v;
}

yaml::node walker::item(const yaml::node& list, std::size_t i, const std::string& what) const {
    yaml::node n = list[i];
    if (n.IsNull()) fail(list, what + " entry " + std::to_string(i + 1) + " is empty");
    return n;
}

std::string walker::scalar(const yaml::node& n, const std::string& what) const {
    if (!n.IsScalar()) fail(n, what + " must be a single value, not " + kind_of(n));
    return n.Scalar();
}

std::chrono::milliseconds walker::duration(const field& f, bool allow_zero) const {
    auto text = scalar(f);
    const yaml::node& n = f.value;
    bool digits_only = !text.empty() && text.find_first_not_of("0123456789") == std::string::npos;
    if (digits_only) fail(n, f.what + ": duration needs a unit, e.g. 2s (got '" + text + "')");
    auto d = parse_duration(text);
    if (!d) fail(n, f.what + ": bad duration '" + text + "' (use ms, s, m, h, d, e.g. 500ms, 2s, 1m30s; at most 1000d)");
    if (!allow_zero && d->count() == 0) fail(n, f.what + " must be greater than zero");
    return *d;
}

address walker::addr(const yaml::node& n, const std::string& what) const {
    auto text = scalar(n, what);
    auto parsed = parse_address_or_reason(text);
    if (auto* reason = std::get_if<std::string>(&parsed))
        fail(n, what + ": bad address '" + text + "': " + *reason + "; expected IP:port or [IPv6]:port");
    return std::get<address>(std::move(parsed));
}

std::uint32_t walker::count(const field& f, std::uint32_t least, std::uint32_t most, const std::string& unit) const {
    auto v = scalar(f);
    if (v.empty() || v.size() > 10 || v.find_first_not_of("0123456789") != std::string::npos || std::stoull(v) < least ||
        std::stoull(v) > most)
        fail(f.value, f.what + " must be a whole number" + (unit.empty() ? "" : " of " + unit) + " from " +
                          std::to_string(least) + " to " + std::to_string(most) + " (got '" + v + "')");
    return static_cast<std::uint32_t>(std::stoull(v));
}

bool walker::boolean(const field& f) const {
    auto v = scalar(f);
    if (v == "true") return true;
    if (v == "false") return false;
    fail(f.value, f.what + " must be true or false (got '" + v + "')");
}

mapping::mapping(const walker& w, const yaml::node& map, std::string where, std::initializer_list<const char*> known)
    : walker_(w), node_(map), where_(std::move(where)) {
    if (!map.IsMap()) w.fail(map, where_ + " must be a mapping, not " + kind_of(map));
    for (const auto& [key, value] : map) {
        if (!key.IsScalar()) w.fail(key, "keys in " + where_ + " must be plain names, not " + kind_of(key));
        const std::string& name = key.Scalar();
        if (fields_.count(name)) w.fail(key, "duplicate key '" + name + "' in " + where_);
        if (std::none_of(known.begin(), known.end(), [&](const char* k) { return name == k; })) {
            std::string list;
            for (auto k : known) list += std::string(list.empty() ? "" : ", ") + k;
            w.fail(key, "unknown key '" + name + "' in " + where_ + " (expected one of: " + list + ")");
        }
        std::string what = where_ == "the config" || where_ == "route" || where_ == "backend" ? name : where_ + "." + name;
        fields_.emplace(name, field{std::move(what), key, value});
    }
}

std::optional<field> mapping::get(const std::string& name) const {
    auto it = fields_.find(name);
    if (it == fields_.end()) return std::nullopt;
    return it->second;
}

field mapping::require(const std::string& name) const {
    auto it = fields_.find(name);
    if (it == fields_.end()) walker_.fail(node_, where_ + " needs '" + name + "'");
    return it->second;
}

}  // namespace spliced::config
