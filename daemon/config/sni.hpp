// SNI names as a config writes them: the one normal form names and patterns are compared in, and what a
// match.sni pattern may be.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace spliced::config {

// Lower-cased, one trailing dot removed: the form in which names and patterns are compared.
std::string normalize_sni(std::string_view name);

// What a config's match.sni entry may be: a host name of LDH labels (1 to 63 letters, digits or '-', neither
// first nor last), at most 253 characters (a trailing dot allowed and ignored), optionally behind a leading
// "*." that stands for one or more labels. nullopt when valid, else a message for the config loader.
std::optional<std::string> validate_sni_pattern(std::string_view pattern);

}  // namespace spliced::config
