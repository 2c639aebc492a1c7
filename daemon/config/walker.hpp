// Walking a config's YAML: a mapping's keys checked against the known ones, values read as the config's kinds
// (single values, durations, whole numbers, booleans, enum names, addresses), every error with the position
// of the node it is about.
#pragma once

#include "config/config.hpp"
#include "config/error.hpp"
#include "config/yaml_tree.hpp"

#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <optional>
#include <string>

namespace spliced::config {

// One key of a mapping: the key node (the position to blame when the value is empty) and its value.
struct field {
    std::string what;  // how messages name it: "drain_timeout", "timeouts.connect"
    yaml::node key;
    yaml::node value;
};

// "a list", "a mapping", "nothing", "a single value".
const char* kind_of(const yaml::node& n);

class walker {
public:
    explicit walker(std::string source) : source_(std::move(source)) {}

    [[noreturn]] void fail(const yaml::node& at, const std::string& message) const;

    // The value of a key; an empty value (`key:`) is blamed on the key (the parser places it at the next token).
    yaml::node value(const field& f) const;  // a handle: cheap to copy, never a reference to a temporary field
    yaml::node map_value(const field& f) const;
    // Entry i of a list; an empty entry (`-` alone) is blamed on the list.
    yaml::node item(const yaml::node& list, std::size_t i, const std::string& what) const;
    std::string scalar(const yaml::node& n, const std::string& what) const;
    std::string scalar(const field& f) const { return scalar(value(f), f.what); }
    std::chrono::milliseconds duration(const field& f, bool allow_zero) const;
    address addr(const yaml::node& n, const std::string& what) const;
    // A whole number from `least` to `most`.
    std::uint32_t count(const field& f, std::uint32_t least, std::uint32_t most, const std::string& unit) const;
    bool boolean(const field& f) const;
    // A value of enum E, by its name; the message lists every name.
    template <typename E>
    E named(const field& f, const std::string& what) const {
        auto v = scalar(f);
        if (auto e = sys::value_of<E>(v)) return *e;
        fail(f.value, "unknown " + what + " '" + v + "' (expected " + sys::all_names<E>() + ")");
    }

protected:
    std::string source_;
};

// A mapping whose keys have been checked against the known ones: an unknown or duplicate key fails.
class mapping {
public:
    mapping(const walker& w, const yaml::node& map, std::string where, std::initializer_list<const char*> known);
    std::optional<field> get(const std::string& name) const;
    field require(const std::string& name) const;
    // Names the mapping in later messages, e.g. "route 'web'" once its name is known.
    void rename(std::string where) { where_ = std::move(where); }

private:
    const walker& walker_;
    yaml::node node_;
    std::string where_;
    std::map<std::string, field> fields_;
};

}  // namespace spliced::config
