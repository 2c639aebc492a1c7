// libFuzzer target: the PROXY protocol decoder on arbitrary bytes, and the encoders on endpoints drawn from them.
// Invariants: consumed never exceeds what was fed; the outcome is the same fed whole, byte at a time or split in
// two; a decoded header stays within the caps; what the encoders write decodes back to the same fields.
#include "split_feeder.hpp"
#include "proxy/proxy_protocol.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>

using namespace spliced::proxy;

namespace {

void require(bool condition) {
    if (!condition) std::abort();
}

struct outcome {
    parse_status status = parse_status::need_more;
    proxy_protocol_error reason = proxy_protocol_error::malformed;
    std::size_t consumed = 0;
    proxy_header header;
};

bool same(const outcome& a, const outcome& b) {
    if (a.status != b.status || a.consumed != b.consumed) return false;
    if (a.status == parse_status::invalid) return a.reason == b.reason;
    if (a.status == parse_status::done) return a.header == b.header;
    return true;
}

// Feeds `data` in pieces of `piece` bytes (after a first piece of `first`), stopping once decided.
outcome run(std::span<const std::uint8_t> data, std::size_t first, std::size_t piece) {
    proxy_header_parser parser;
    outcome out;
    const std::size_t pieces[] = {first, piece};
    const auto r = spliced::test::feed_pieces(
        parser, data, pieces,
        [&](const auto& step, std::size_t n) {
            require(step.consumed <= n && (step.status != parse_status::need_more || step.consumed == n));
            out.consumed += step.consumed;
        },
        require);
    out.status = r.status;
    out.reason = r.reason;
    if (r.status == parse_status::done) out.header = parser.header();
    return out;
}

void check_header(const outcome& o) {
    const proxy_header& h = o.header;
    require(o.consumed > 0);
    if (h.version == 1) {
        require(o.consumed <= max_v1_line);
        require(h.tlvs.empty());
    } else {
        require(h.version == 2);
        require(o.consumed >= 16 && o.consumed <= max_v2_header);
    }
    require(h.source.has_value() == h.destination.has_value());
    require(h.has_addresses() == (h.family == proxy_family::tcp4 || h.family == proxy_family::tcp6));
    if (h.has_addresses()) {
        require(h.command == proxy_command::proxy);
        require(h.source->is_v6() == (h.family == proxy_family::tcp6));
        require(h.destination->is_v6() == h.source->is_v6());
    }
    if (h.unique_id) require(h.unique_id->size() <= 128);

    // Re-encoding the addresses gives a header that decodes to the same addresses.
    if (h.has_addresses()) {
        const auto v1 = encode_v1(*h.source, *h.destination);
        const outcome back1 = run(v1, v1.size(), 1);
        require(back1.status == parse_status::done && back1.consumed == v1.size());
        require(back1.header.source == h.source && back1.header.destination == h.destination);

        const std::uint8_t id[] = {'i', 'd'};
        const std::string authority = h.authority.value_or("").substr(0, 255);
        const auto v2 = encode_v2(*h.source, *h.destination, authority, id);
        require(!v2.empty());
        const outcome back2 = run(v2, v2.size(), 1);
        require(back2.status == parse_status::done && back2.consumed == v2.size());
        require(back2.header.source == h.source && back2.header.destination == h.destination);
        require(back2.header.authority.value_or("") == authority);
    }
}

// Endpoints made of the input's first bytes go through both encoders and back.
void round_trip(std::span<const std::uint8_t> data) {
    if (data.size() < 38) return;
    const auto take = [&](std::size_t at, bool v6) {
        std::array<std::uint8_t, 16> ip{};
        std::memcpy(ip.data(), data.data() + at, v6 ? 16 : 4);
        const auto port = static_cast<std::uint16_t>((data[at + 16] << 8) | data[at + 17]);
        return v6 ? spliced::net::address::v6(ip, port) : spliced::net::address::v4({ip[0], ip[1], ip[2], ip[3]}, port);
    };
    const bool src6 = data[0] & 1;
    const bool dst6 = data[0] & 2;
    const spliced::net::address src = take(1, src6);
    const spliced::net::address dst = take(19, dst6);
    const bool six = src6 || dst6;
    const spliced::net::address want_src = six ? src.as_v6() : src;
    const spliced::net::address want_dst = six ? dst.as_v6() : dst;

    const auto v1 = encode_v1(src, dst);
    const outcome o1 = run(v1, v1.size(), 3);
    require(o1.status == parse_status::done && o1.consumed == v1.size());
    require(*o1.header.source == want_src && *o1.header.destination == want_dst);

    const std::size_t id_size = 1 + data[37] % 128;
    const auto rest = data.subspan(38);
    const auto id = rest.subspan(0, std::min(id_size, rest.size()));
    const auto authority_bytes = rest.subspan(id.size());
    const std::string authority(authority_bytes.begin(), authority_bytes.end());
    const auto v2 = encode_v2(src, dst, authority, id);
    if (id.empty()) {
        require(v2.empty());
        return;
    }
    if (v2.empty()) return;  // over the cap
    const outcome o2 = run(v2, v2.size(), 5);
    require(o2.status == parse_status::done && o2.consumed == v2.size());
    require(*o2.header.source == want_src && *o2.header.destination == want_dst);
    require(o2.header.unique_id && std::equal(id.begin(), id.end(), o2.header.unique_id->begin(),
                                              o2.header.unique_id->end()));
    require(o2.header.authority.has_value() == !authority.empty());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::span<const std::uint8_t> input(data, size);
    const outcome whole = run(input, size, size);
    if (whole.status == parse_status::need_more) {
        require(whole.consumed == size);
        require(size < max_v2_header);
    }
    if (whole.status == parse_status::done) check_header(whole);
    if (whole.status == parse_status::invalid) require(whole.consumed >= 1 && whole.consumed <= max_v2_header);
    const auto reason = to_string(whole.reason);
    require(!reason.empty());

    require(same(run(input, 1, 1), whole));
    if (size > 1) require(same(run(input, 1 + data[0] % (size - 1), size), whole));
    round_trip(input);
    return 0;
}
