// Feeding an incremental parser (feed(bytes) -> {status, ...}) its input in pieces, as sockets deliver it, and
// stopping where a caller stops: once it decided. Shared by the unit tests and the fuzzers of the PROXY header
// and ClientHello parsers, which check with it that whole, byte at a time and every split give one answer.
#pragma once

#include "proxy/parse_status.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>

namespace spliced::test {

// Feeds `input` to `parser` in pieces of the sizes in `pieces` (the last one repeats) until it decides (or the
// input ends). `on_piece(result, piece_size)` sees each result; once decided, `check(ok)` is told whether the
// parser kept its answer and took nothing when fed the deciding piece and the rest again. Returns the last result.
template <typename Parser, typename OnPiece, typename Check>
auto feed_pieces(Parser& parser, std::span<const std::uint8_t> input, std::span<const std::size_t> pieces,
                 OnPiece on_piece, Check check) {
    decltype(parser.feed(input)) last{};
    std::size_t pos = 0, piece = 0;
    while (pos < input.size()) {
        const std::size_t n = std::min(pieces[std::min(piece, pieces.size() - 1)], input.size() - pos);
        ++piece;
        last = parser.feed(input.subspan(pos, n));
        on_piece(last, n);
        if (last.status != proxy::parse_status::need_more) {
            const auto again = parser.feed(input.subspan(pos));
            bool kept = again.status == last.status;
            if constexpr (requires { again.consumed; }) kept = kept && again.consumed == 0;
            check(kept);
            break;
        }
        pos += n;
    }
    return last;
}

}  // namespace spliced::test
