// libFuzzer target: the TLS ClientHello reader on arbitrary bytes. Invariants: the outcome is the same fed
// whole, in small pieces or split in two; a first byte other than 22 is not_tls; a name read is lower-case,
// without a trailing dot and within its bound; ALPN names are never empty.
#include "split_feeder.hpp"
#include "proxy/client_hello.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

using namespace spliced::proxy;

namespace {

void require(bool condition) {
    if (!condition) std::abort();
}

struct outcome {
    parse_status status = parse_status::need_more;
    client_hello_error reason = client_hello_error::not_tls;
    client_hello hello;
};

bool same(const outcome& a, const outcome& b) {
    if (a.status != b.status) return false;
    if (a.status == parse_status::invalid) return a.reason == b.reason;
    if (a.status == parse_status::done) {
        return a.hello.server_name == b.hello.server_name && a.hello.alpn == b.hello.alpn &&
               a.hello.legacy_version == b.hello.legacy_version;
    }
    return true;
}

outcome run(std::span<const std::uint8_t> data, std::size_t first, std::size_t piece) {
    client_hello_parser parser;
    const std::size_t pieces[] = {first, piece};
    const auto r = spliced::test::feed_pieces(parser, data, pieces, [](const auto&, std::size_t) {}, require);
    outcome out;
    out.status = r.status;
    out.reason = r.reason;
    if (r.status == parse_status::done) out.hello = parser.hello();
    return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::span<const std::uint8_t> input(data, size);
    const outcome whole = run(input, size, size);
    if (size > 0 && data[0] != 22) require(whole.status == parse_status::invalid && whole.reason == client_hello_error::not_tls);
    if (whole.status == parse_status::done) {
        if (const auto& name = whole.hello.server_name) {
            require(!name->empty() && name->size() <= max_server_name);
            require(name->back() != '.' && name->front() != '.');
            for (char c : *name) require(!(c >= 'A' && c <= 'Z'));
        }
        for (const auto& protocol : whole.hello.alpn) require(!protocol.empty() && protocol.size() <= 255);
        require((whole.hello.legacy_version >> 8) == 0x03);
    }
    require(!to_string(whole.reason).empty());

    // Byte at a time; in 7-byte pieces past 2 KiB, where single bytes would slow the search too much.
    const std::size_t piece = size <= 2048 ? 1 : 7;
    require(same(run(input, piece, piece), whole));
    if (size > 1) require(same(run(input, 1 + data[0] % (size - 1), size), whole));
    if (size > 2) require(same(run(input, 1 + data[size - 1] % (size - 1), 1 + data[1] % 17), whole));
    return 0;
}
