// libFuzzer target: the YAML config loader on arbitrary bytes. Every input must either load or be
// refused with a config_error; anything else (a crash, a sanitizer report, another exception) is a bug.
#include "config/loader.hpp"

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    try {
        spliced::config::load_string(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.yaml");
    } catch (const spliced::config::config_error&) {
        // refused with a position: the expected outcome for bad input
    }
    return 0;
}
