// One name table per enum: to_string(), the config loader's parsing and metric label values all read it.
#pragma once

#include <array>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace spliced::sys {

// Specialised next to each enum E: `static constexpr std::array table{std::pair{E::a, "a"}, ...}`, one row
// per value in the enum's order (0 .. N-1), so that a value's number is its row.
template <typename E>
struct enum_names;

template <typename E>
inline constexpr std::size_t enum_count = enum_names<E>::table.size();

template <typename E>
constexpr bool rows_in_order() {
    for (std::size_t i = 0; i < enum_count<E>; ++i)
        if (static_cast<std::size_t>(enum_names<E>::table[i].first) != i) return false;
    return true;
}

// The name of `e` ("?" for a value without a row).
template <typename E>
constexpr const char* name_of(E e) {
    static_assert(rows_in_order<E>(), "an enum's name table lists its values in order, from 0");
    const auto i = static_cast<std::size_t>(e);
    return i < enum_count<E> ? enum_names<E>::table[i].second : "?";
}

// The value named `name`, if one is.
template <typename E>
constexpr std::optional<E> value_of(std::string_view name) {
    for (const auto& [value, text] : enum_names<E>::table)
        if (name == text) return value;
    return std::nullopt;
}

// "a, b, c or d": every name, for messages.
template <typename E>
std::string all_names() {
    std::string out;
    for (std::size_t i = 0; i < enum_count<E>; ++i) {
        if (i > 0) out += i + 1 == enum_count<E> ? " or " : ", ";
        out += enum_names<E>::table[i].second;
    }
    return out;
}

}  // namespace spliced::sys
