// The three outcomes of feeding bytes to one of the pure preamble parsers.
#pragma once

#include <cstdint>

namespace spliced::proxy {

enum class parse_status : std::uint8_t {
    need_more,  // everything fed so far is a valid beginning: feed more bytes
    done,       // the message is complete and valid
    invalid,    // refused; the result's reason says why
};

}  // namespace spliced::proxy
