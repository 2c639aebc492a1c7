// PROXY protocol v1/v2 decoder and encoders: the spec's examples, peers' vectors, every boundary, every split.
#include "proxy/proxy_protocol.hpp"
#include "split_feeder.hpp"

#include <arpa/inet.h>

#include <boost/crc.hpp>
#include <catch2/catch.hpp>
#include <random>
#include <string>
#include <vector>

using namespace spliced::proxy;

namespace {

using bytes = std::vector<std::uint8_t>;

bytes text(std::string_view s) { return bytes(s.begin(), s.end()); }

bytes operator+(bytes a, const bytes& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
}

const bytes signature = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

// A v2 header: signature, version/command, family, the length of `block`, then `block`.
bytes v2(std::uint8_t version_command, std::uint8_t family, const bytes& block) {
    bytes out = signature;
    out.push_back(version_command);
    out.push_back(family);
    out.push_back(static_cast<std::uint8_t>(block.size() >> 8));
    out.push_back(static_cast<std::uint8_t>(block.size()));
    return out + block;
}

bytes tlv(std::uint8_t type, const bytes& value) {
    bytes out = {type, static_cast<std::uint8_t>(value.size() >> 8), static_cast<std::uint8_t>(value.size())};
    return out + value;
}

// 127.0.0.1:42 -> 127.0.0.1:1337, the address block of HAProxy's TLV reg-test.
const bytes v4_block = {0x7F, 0x00, 0x00, 0x01, 0x7F, 0x00, 0x00, 0x01, 0x00, 0x2A, 0x05, 0x39};

// Fills in the CRC32C TLV (which must already be in `header`, zeroed) the way a sender does.
bytes with_crc(bytes header, std::size_t value_at) {
    boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true> crc;
    crc.process_bytes(header.data(), header.size());
    const std::uint32_t sum = crc.checksum();
    header[value_at] = static_cast<std::uint8_t>(sum >> 24);
    header[value_at + 1] = static_cast<std::uint8_t>(sum >> 16);
    header[value_at + 2] = static_cast<std::uint8_t>(sum >> 8);
    header[value_at + 3] = static_cast<std::uint8_t>(sum);
    return header;
}

spliced::net::address endpoint(const char* ip, std::uint16_t port) {
    const bool v6 = std::string_view(ip).find(':') != std::string_view::npos;
    std::array<std::uint8_t, 16> bytes{};
    REQUIRE(inet_pton(v6 ? AF_INET6 : AF_INET, ip, bytes.data()) == 1);
    if (v6) return spliced::net::address::v6(bytes, port);
    return spliced::net::address::v4({bytes[0], bytes[1], bytes[2], bytes[3]}, port);
}

struct outcome {
    parse_status status = parse_status::need_more;
    proxy_protocol_error reason = proxy_protocol_error::malformed;
    std::size_t consumed = 0;  // over all calls, up to the one that decided
    proxy_header header;
    bool operator==(const outcome& o) const {
        if (status != o.status || consumed != o.consumed) return false;
        if (status == parse_status::invalid) return reason == o.reason;
        if (status == parse_status::done) return header == o.header;
        return true;
    }
};

// Feeds `input` in pieces of the given sizes (the last one repeats), stopping as a caller does once decided.
outcome feed_in(const bytes& input, const std::vector<std::size_t>& pieces) {
    proxy_header_parser parser;
    outcome out;
    const auto r = spliced::test::feed_pieces(
        parser, input, pieces,
        [&](const auto& piece, std::size_t n) {
            REQUIRE(piece.consumed <= n);
            if (piece.status == parse_status::need_more) REQUIRE(piece.consumed == n);  // all taken while undecided
            out.consumed += piece.consumed;
        },
        [](bool kept) { REQUIRE(kept); });  // finished: more input is neither taken nor changes the answer
    out.status = r.status;
    out.reason = r.reason;
    if (r.status == parse_status::done) {
        out.header = parser.header();
        REQUIRE(parser.header_size() == out.consumed);
    }
    return out;
}

// The outcome of `input` fed whole, after checking that byte-at-a-time and every two-piece split agree.
outcome decode(const bytes& input) {
    const outcome whole = feed_in(input, {input.size() + 1});
    CHECK(feed_in(input, {1}) == whole);
    for (std::size_t split = 1; split < input.size(); ++split) {
        INFO("split at " << split);
        CHECK(feed_in(input, {split, input.size()}) == whole);
    }
    return whole;
}

outcome decode(std::string_view s) { return decode(text(s)); }

void check_refused(const bytes& input, proxy_protocol_error reason) {
    const outcome o = decode(input);
    CHECK(o.status == parse_status::invalid);
    CHECK(o.reason == reason);
}

void check_refused(std::string_view s, proxy_protocol_error reason = proxy_protocol_error::malformed) {
    INFO(s);
    check_refused(text(s), reason);
}

void check_incomplete(const bytes& input) {
    const outcome o = decode(input);
    CHECK(o.status == parse_status::need_more);
    CHECK(o.consumed == input.size());
}

}  // namespace

// ---- v1 ----

TEST_CASE("v1: the spec's example line is decoded and the HTTP request after it is left to the caller") {
    const std::string line = "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";
    const outcome o = decode(line + "GET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n");
    REQUIRE(o.status == parse_status::done);
    CHECK(o.consumed == line.size());
    CHECK(o.header.version == 1);
    CHECK(o.header.command == proxy_command::proxy);
    CHECK(o.header.family == proxy_family::tcp4);
    REQUIRE(o.header.has_addresses());
    CHECK(*o.header.source == endpoint("192.168.0.1", 56324));
    CHECK(*o.header.destination == endpoint("192.168.0.11", 443));
    CHECK(o.header.tlvs.empty());
}

TEST_CASE("v1: the spec's longest lines of each kind are accepted (56, 104, 15 and 107 bytes)") {
    const std::string f39 = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
    const std::string tcp4 = "PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n";
    const std::string tcp6 = "PROXY TCP6 " + f39 + " " + f39 + " 65535 65535\r\n";
    const std::string unknown_short = "PROXY UNKNOWN\r\n";
    const std::string unknown_long = "PROXY UNKNOWN " + f39 + " " + f39 + " 65535 65535\r\n";
    CHECK(tcp4.size() == 56);
    CHECK(tcp6.size() == 104);
    CHECK(unknown_short.size() == 15);
    CHECK(unknown_long.size() == 107);

    const outcome a = decode(tcp4 + "x");
    REQUIRE(a.status == parse_status::done);
    CHECK(a.consumed == 56);
    CHECK(a.header.source->text() == "255.255.255.255:65535");

    const outcome b = decode(tcp6 + "x");
    REQUIRE(b.status == parse_status::done);
    CHECK(b.consumed == 104);
    CHECK(b.header.family == proxy_family::tcp6);
    CHECK(b.header.destination->text() == "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535");

    for (const auto& line : {unknown_short, unknown_long}) {
        const outcome u = decode(line + "x");
        REQUIRE(u.status == parse_status::done);
        CHECK(u.consumed == line.size());
        CHECK(u.header.family == proxy_family::unspec);
        CHECK_FALSE(u.header.has_addresses());
    }
}

TEST_CASE("v1: a 107-byte line is the longest accepted; at 108 it is refused on its 107th byte") {
    // "PROXY UNKNOWN " + padding + CRLF; UNKNOWN ignores what precedes the CRLF.
    const auto line = [](std::size_t total) { return "PROXY UNKNOWN " + std::string(total - 16, 'a') + "\r\n"; };
    REQUIRE(line(107).size() == 107);
    const outcome ok = decode(line(107) + "payload");
    CHECK(ok.status == parse_status::done);
    CHECK(ok.consumed == 107);

    const outcome too_long = decode(line(108));
    CHECK(too_long.status == parse_status::invalid);
    CHECK(too_long.reason == proxy_protocol_error::malformed);
    CHECK(too_long.consumed == 107);

    // Same for a TCP6 line padded with an over-long (but hex) address.
    check_refused("PROXY TCP6 " + std::string(90, 'f') + " ::1 1 2\r\n");
}

TEST_CASE("v1: octets, ports and their boundaries") {
    CHECK(decode("PROXY TCP4 255.0.0.1 1.2.3.4 1 2\r\n").status == parse_status::done);
    check_refused("PROXY TCP4 256.0.0.1 1.2.3.4 1 2\r\n");
    check_refused("PROXY TCP4 1.2.3.4 1.2.3.256 1 2\r\n");
    check_refused("PROXY TCP4 1.2.3.4 1.2.3.999 1 2\r\n");

    const outcome top = decode("PROXY TCP4 1.2.3.4 5.6.7.8 65535 0\r\n");
    REQUIRE(top.status == parse_status::done);
    CHECK(top.header.source->port() == 65535);
    CHECK(top.header.destination->port() == 0);
    check_refused("PROXY TCP4 1.2.3.4 5.6.7.8 65536 1\r\n");
    check_refused("PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n");
    check_refused("PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n");
    check_refused("PROXY TCP4 1.2.3.4 5.6.7.8 100000 1\r\n");
    check_refused("PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n");
    check_refused("PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n");
    check_refused("PROXY TCP4 1.2.3.4 5.6.7.8 1 +2\r\n");
    check_refused("PROXY TCP4 1.2.3.4 5.6.7.8 0x10 2\r\n");
    // Heading zeroes are not permitted (octal confusion), in ports or octets.
    check_refused("PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n");
    check_refused("PROXY TCP4 1.2.3.4 5.6.7.8 00 2\r\n");
    check_refused("PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n");
    check_refused("PROXY TCP4 1.2.3.4 5.6.7.08 1 2\r\n");
    // Exactly four octets.
    check_refused("PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n");
    check_refused("PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n");
    check_refused("PROXY TCP4 1..3.4 5.6.7.8 1 2\r\n");
}

TEST_CASE("v1: fields, spaces, family tokens and line ends must match exactly") {
    check_refused("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n");          // missing field
    check_refused("PROXY TCP4 1.2.3.4 5.6.7.8\r\n");
    check_refused("PROXY TCP4 1.2.3.4\r\n");
    check_refused("PROXY TCP4\r\n");
    check_refused("PROXY TCP4 \r\n");
    check_refused("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n");      // extra field
    check_refused("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n");       // trailing space
    check_refused("PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n");       // double spaces
    check_refused("PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n");
    check_refused("PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n");
    check_refused("PROXY\tTCP4 1.2.3.4 5.6.7.8 1 2\r\n");
    check_refused("PROXY TCP4\t1.2.3.4 5.6.7.8 1 2\r\n");
    check_refused("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n");          // LF alone
    check_incomplete(text("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r"));  // the LF may still come
    check_refused("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX");         // CR alone, then payload
    check_refused("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n\r");
    check_refused("PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n");        // unknown families
    check_refused("PROXY TCP 1.2.3.4 5.6.7.8 1 2\r\n");
    check_refused("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n");
    check_refused("PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n");
    check_refused("PROXY UNKNOWNX\r\n");
    check_refused("PROXY UNKNOW\r\n");
    check_refused("proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n");        // case matters
    check_refused(" PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n");       // leading garbage
    check_refused("XPROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n");
    check_refused("PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n");
    check_refused("\r\nPROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n");
    check_refused("PROXY UNKNOWN\r\r\n");
    check_refused("PROXY UNKNOWN a\nb\r\n");
}

TEST_CASE("v1: addresses follow the announced family, IPv6 by inet_pton rules") {
    check_refused("PROXY TCP4 ::1 ::1 1 2\r\n");
    check_refused("PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n");
    check_refused("PROXY TCP4 ::ffff:1.2.3.4 ::ffff:1.2.3.4 1 2\r\n");
    check_refused("PROXY TCP4 1.2.3.4 ::1 1 2\r\n");
    check_refused("PROXY TCP6 1::2::3 ::1 1 2\r\n");
    check_refused("PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n");
    check_refused("PROXY TCP6 00001:: ::1 1 2\r\n");
    check_refused("PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n");
    check_refused("PROXY TCP6 ::g ::1 1 2\r\n");
    check_refused("PROXY TCP4 invalid invalid 65533 65533\r\n");

    const outcome mapped = decode("PROXY TCP6 ::ffff:127.0.0.1 ::ffff:127.0.0.1 443 443\r\n");
    REQUIRE(mapped.status == parse_status::done);
    CHECK(*mapped.header.source == endpoint("::ffff:127.0.0.1", 443));
    const outcome upper = decode("PROXY TCP6 2001:DB8::1 2001:db8::2 1 2\r\n");
    REQUIRE(upper.status == parse_status::done);
    CHECK(*upper.header.source == endpoint("2001:db8::1", 1));
}

TEST_CASE("v1: UNKNOWN is accepted with or without the rest of the line, which is ignored") {
    for (const char* line : {"PROXY UNKNOWN\r\n", "PROXY UNKNOWN \r\n", "PROXY UNKNOWN 1.2.3.4 5.6.7.8 65536 65536\r\n",
                             "PROXY UNKNOWN whatever at all\r\n"}) {
        INFO(line);
        const outcome o = decode(std::string(line) + "payload");
        REQUIRE(o.status == parse_status::done);
        CHECK(o.consumed == std::string_view(line).size());
        CHECK(o.header.family == proxy_family::unspec);
        CHECK_FALSE(o.header.has_addresses());
    }
}

TEST_CASE("v1: go-proxyproto's vectors") {
    check_incomplete(text("PROX"));  // could still become a header
    check_refused("PROXY \n");
    check_refused("PROXY \r\n");
    check_refused("PROXY\r\n");
    check_refused("PROXY SOMETHING\r\n");
    check_incomplete(text("PROXY TCP4 127.0.0.1 127.0.0.1 65533 65533"));
    check_refused("PROXY TCP4 127.0.0.1 127.0.0.1 65536 65536\r\n");
    check_refused("PROXY TCP6 127.0.0.1 127.0.0.1 65533 65533\r\n");
    check_refused("PROXY UNKNOWN " + std::string(100, 'f') + " \r\n");
    // An endless stream of spaces is refused within the 107-byte budget.
    const outcome spaces = decode("PROXY TCP6 ::1 ::1 1 2" + std::string(200, ' ') + "\r\n");
    CHECK(spaces.status == parse_status::invalid);
    CHECK(spaces.consumed <= max_v1_line);
}

TEST_CASE("v1: Envoy's vectors") {
    const outcome basic = decode("PROXY TCP4 1.2.3.4 253.253.253.253 65535 1234\r\nmore data");
    REQUIRE(basic.status == parse_status::done);
    CHECK(basic.header.source->text() == "1.2.3.4:65535");
    CHECK(basic.header.destination->text() == "253.253.253.253:1234");
    const outcome six = decode("PROXY TCP6 1:2:3::4 5:6::7:8 65535 1234\r\nmore data");
    REQUIRE(six.status == parse_status::done);
    CHECK(six.header.source->text() == "[1:2:3::4]:65535");
    const outcome minimal = decode("PROXY UNKNOWN\r\nmore data");
    CHECK(minimal.status == parse_status::done);
    CHECK(minimal.consumed == 15);
    check_refused("PROXY TCP4 1.2.3.4 2.3.4.5 100 100" + std::string(256, ' '));
    const outcome fragmented = feed_in(text("PROXY TCP4 254.254.254.254 1.2.3.4 65535 1234\r\n..."), {10});
    REQUIRE(fragmented.status == parse_status::done);
    CHECK(fragmented.header.source->text() == "254.254.254.254:65535");
    CHECK(fragmented.consumed == 47);
}

TEST_CASE("v1: every prefix of a valid line waits for more, taking all of it") {
    const bytes line = text("PROXY TCP6 2001:db8::1 2001:db8::2 65535 443\r\n");
    for (std::size_t n = 0; n < line.size(); ++n) {
        INFO("prefix " << n);
        check_incomplete(bytes(line.begin(), line.begin() + static_cast<std::ptrdiff_t>(n)));
    }
    CHECK(decode(line).status == parse_status::done);
}

// ---- detection ----

TEST_CASE("a first byte that starts neither signature is refused at once, taking only it") {
    for (int b = 0; b < 256; ++b) {
        if (b == 'P' || b == 0x0D) continue;
        proxy_header_parser parser;
        const bytes input = {static_cast<std::uint8_t>(b), 'R', 'O', 'X', 'Y'};
        const auto r = parser.feed(input);
        CHECK(r.status == parse_status::invalid);
        CHECK(r.reason == proxy_protocol_error::malformed);
        CHECK(r.consumed == 1);
    }
    // Other protocols never get past their first bytes.
    check_refused("GET / HTTP/1.1\r\n\r\n");
    check_refused("SSH-2.0-OpenSSH_9.2\r\n");
    check_refused(bytes{0x16, 0x03, 0x01, 0x00, 0x10}, proxy_protocol_error::malformed);
    const outcome post = decode("POST / HTTP/1.1\r\n");
    CHECK(post.status == parse_status::invalid);
    CHECK(post.consumed == 2);
    // A wrong v2 signature byte is refused on that byte.
    for (std::size_t i = 1; i < signature.size(); ++i) {
        bytes wrong = signature + bytes{0x21, 0x11, 0x00, 0x0C} + v4_block;
        wrong[i] ^= 0x40;
        const outcome o = decode(wrong);
        CHECK(o.status == parse_status::invalid);
        CHECK(o.consumed == i + 1);
    }
}

TEST_CASE("feeding nothing changes nothing") {
    proxy_header_parser parser;
    CHECK(parser.feed({}).status == parse_status::need_more);
    CHECK(parser.feed({}).consumed == 0);
    const bytes line = text("PROXY UNKNOWN\r\n");
    CHECK(parser.feed(line).status == parse_status::done);
}

// ---- v2 ----

TEST_CASE("v2: TCP4 and TCP6 addresses are decoded and the payload after the header is left") {
    // Envoy's V2Basic.
    const bytes basic = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, 0x21,
                         0x11, 0x00, 0x0c, 0x01, 0x02, 0x03, 0x04, 0x00, 0x01, 0x01, 0x02, 0x03, 0x05,
                         0x00, 0x02, 'm',  'o',  'r',  'e',  ' ',  'd',  'a',  't',  'a'};
    const outcome a = decode(basic);
    REQUIRE(a.status == parse_status::done);
    CHECK(a.consumed == 28);
    CHECK(a.header.version == 2);
    CHECK(a.header.command == proxy_command::proxy);
    CHECK(a.header.family == proxy_family::tcp4);
    CHECK(a.header.source->text() == "1.2.3.4:773");
    CHECK(a.header.destination->text() == "0.1.1.2:2");

    // Envoy's V2BasicV6 block, announced as TCP6.
    bytes block6 = {0x00, 0x01, 0x00, 0x02, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04,
                    0x00, 0x01, 0x01, 0x00, 0x02, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                    0x00, 0x08, 0x00, 0x02};
    const outcome b = decode(v2(0x21, 0x21, block6) + text("more data"));
    REQUIRE(b.status == parse_status::done);
    CHECK(b.consumed == 52);
    CHECK(b.header.family == proxy_family::tcp6);
    CHECK(b.header.source->text() == "[1:2:3::4]:8");
    CHECK(b.header.destination->text() == "[1:100:200:3::]:2");
    // Envoy sends that vector as 0x22 (UDP over IPv6): spliced refuses datagram transports.
    check_refused(v2(0x21, 0x22, block6) + text("more data"), proxy_protocol_error::unsupported);
}

TEST_CASE("v2: every one of the 256 family/transport bytes, under PROXY and under LOCAL") {
    const bytes block(216, 0x00);  // room for any address block; zeros parse as empty type-0 TLVs
    for (int f = 0; f < 256; ++f) {
        const auto family = static_cast<std::uint8_t>(f);
        INFO("family byte " << f);
        const outcome proxy = decode(v2(0x21, family, block));
        const outcome local = decode(v2(0x20, family, block));
        switch (f) {
        case 0x00:
        case 0x11:
        case 0x21:
        case 0x31:
            REQUIRE(proxy.status == parse_status::done);
            CHECK(proxy.consumed == 16 + 216);
            CHECK(proxy.header.command == proxy_command::proxy);
            CHECK(proxy.header.family == (f == 0x00 ? proxy_family::unspec
                                          : f == 0x11 ? proxy_family::tcp4
                                          : f == 0x21 ? proxy_family::tcp6
                                                      : proxy_family::unix_stream));
            CHECK(proxy.header.has_addresses() == (f == 0x11 || f == 0x21));
            break;
        case 0x12:
        case 0x22:
        case 0x32:
            CHECK(proxy.status == parse_status::invalid);
            CHECK(proxy.reason == proxy_protocol_error::unsupported);
            CHECK(proxy.consumed == 14);
            break;
        default:
            CHECK(proxy.status == parse_status::invalid);
            CHECK(proxy.reason == proxy_protocol_error::malformed);
            CHECK(proxy.consumed == 14);
        }
        const bool defined = f == 0x00 || f == 0x11 || f == 0x12 || f == 0x21 || f == 0x22 || f == 0x31 || f == 0x32;
        if (defined) {
            REQUIRE(local.status == parse_status::done);
            CHECK(local.header.command == proxy_command::local);
            CHECK(local.header.family == proxy_family::unspec);
            CHECK_FALSE(local.header.has_addresses());
            CHECK(local.consumed == 16 + 216);
        } else {
            CHECK(local.status == parse_status::invalid);
            CHECK(local.reason == proxy_protocol_error::malformed);
        }
    }
}

TEST_CASE("v2: of the 16 command nibbles only LOCAL and PROXY pass, and only version 2") {
    for (int n = 0; n < 16; ++n) {
        INFO("command " << n);
        const outcome o = decode(v2(static_cast<std::uint8_t>(0x20 | n), 0x11, v4_block));
        if (n == 0 || n == 1) {
            REQUIRE(o.status == parse_status::done);
            CHECK(o.header.command == (n == 0 ? proxy_command::local : proxy_command::proxy));
            CHECK(o.header.has_addresses() == (n == 1));
        } else {
            CHECK(o.status == parse_status::invalid);
            CHECK(o.reason == proxy_protocol_error::malformed);
            CHECK(o.consumed == 13);
        }
    }
    for (int version = 0; version < 16; ++version) {
        INFO("version " << version);
        const outcome o = decode(v2(static_cast<std::uint8_t>((version << 4) | 1), 0x11, v4_block));
        CHECK(o.status == (version == 2 ? parse_status::done : parse_status::invalid));
        if (version != 2) CHECK(o.consumed == 13);
    }
}

TEST_CASE("v2: Envoy's refused vectors") {
    const auto envoy = [](std::uint8_t b13, std::uint8_t b14, std::uint8_t len) {
        return signature + bytes{b13, b14, 0x00, len, 0x01, 0x02, 0x03, 0x04, 0x00, 0x01, 0x01, 0x02,
                                 0x03, 0x05, 0x00, 0x02, 'm',  'o',  'r',  'e',  ' ',  'd',  'a',  't', 'a'};
    };
    check_refused(envoy(0x21, 0x41, 0x0c), proxy_protocol_error::malformed);    // V2UnsupportedAF
    check_refused(envoy(0x23, 0x1f, 0x0c), proxy_protocol_error::malformed);    // V2NotLocalOrOnBehalf
    check_refused(envoy(0x21, 0x11, 0x0b), proxy_protocol_error::malformed);    // V2ShortAddrV4
    check_refused(envoy(0x21, 0x21, 0x04), proxy_protocol_error::malformed);    // V2ShortV4: TCP6, 4 bytes
    check_refused(envoy(0x21, 0x32, 0x14), proxy_protocol_error::unsupported);  // V2AF_UNIX (datagram)
    check_refused(envoy(0x29, 0x32, 0x14), proxy_protocol_error::malformed);    // V2BadCommand
    check_refused(envoy(0x21, 0x93, 0x14), proxy_protocol_error::malformed);    // V2WrongVersion (family 0x93)
    check_refused(envoy(0x21, 0x21, 0x23), proxy_protocol_error::malformed);    // V2ShortAddrV6 (as TCP6)
}

TEST_CASE("v2: LOCAL headers skip their whole block, whatever it holds (Envoy's and AWS NLB's vectors)") {
    const outcome plain = decode(signature + bytes{0x20, 0x00, 0x00, 0x00} + text("more data"));
    REQUIRE(plain.status == parse_status::done);
    CHECK(plain.consumed == 16);
    CHECK(plain.header.command == proxy_command::local);

    const outcome extension = decode(signature + bytes{0x20, 0x00, 0x00, 0x04, 0x00, 0x00, 0x01, 0xff} + text("more data"));
    REQUIRE(extension.status == parse_status::done);
    CHECK(extension.consumed == 20);

    const bytes nlb = signature + bytes{0x20, 0x00, 0x00, 0x07, 0x00, 0x00, 0x04, 0x0a, 0x0b, 0x0c, 0x0d};
    const outcome health = decode(nlb + text("moredata"));
    REQUIRE(health.status == parse_status::done);
    CHECK(health.consumed == 23);
    CHECK(health.header.tlvs.empty());  // not read for LOCAL

    // Not even TLV framing is required of a LOCAL block, nor a full address block for its family.
    CHECK(decode(v2(0x20, 0x00, bytes{0xff, 0xff})).status == parse_status::done);
    CHECK(decode(v2(0x20, 0x11, bytes{1, 2, 3})).status == parse_status::done);
    CHECK(decode(v2(0x20, 0x21, bytes{})).status == parse_status::done);
}

TEST_CASE("v2: an address block shorter than its family needs is refused when the length is read") {
    for (std::size_t len = 0; len < 216; ++len) {
        const bytes block(len, 0x00);
        for (std::uint8_t family : {std::uint8_t{0x11}, std::uint8_t{0x21}, std::uint8_t{0x31}}) {
            const std::size_t needed = family == 0x11 ? 12 : family == 0x21 ? 36 : 216;
            if (len >= needed) continue;
            INFO("family " << int(family) << " len " << len);
            const outcome o = feed_in(v2(0x21, family, block), {1});
            CHECK(o.status == parse_status::invalid);
            CHECK(o.reason == proxy_protocol_error::malformed);
            CHECK(o.consumed == 16);
        }
    }
    // Exactly the address block: accepted.
    CHECK(decode(v2(0x21, 0x11, bytes(12, 1))).status == parse_status::done);
    CHECK(decode(v2(0x21, 0x21, bytes(36, 1))).status == parse_status::done);
    CHECK(decode(v2(0x21, 0x31, bytes(216, 1))).status == parse_status::done);
}

TEST_CASE("v2: a header over 4096 bytes is too_large as soon as its length field is read") {
    const std::size_t fits = max_v2_header - 16;  // 4080: 12 address bytes + 1356 empty TLVs
    const outcome ok = decode(v2(0x21, 0x11, v4_block + bytes(fits - 12, 0x00)));
    REQUIRE(ok.status == parse_status::done);
    CHECK(ok.consumed == 4096);
    CHECK(ok.header.tlvs.size() == (fits - 12) / 3);

    for (std::size_t len : {fits + 1, std::size_t{0x8000}, std::size_t{0xFFFF}}) {
        bytes header = signature + bytes{0x21, 0x11, static_cast<std::uint8_t>(len >> 8), static_cast<std::uint8_t>(len)};
        const outcome o = feed_in(header + bytes(100, 0), {header.size() + 100});
        CHECK(o.status == parse_status::invalid);
        CHECK(o.reason == proxy_protocol_error::too_large);
        CHECK(o.consumed == 16);
    }
    // LOCAL too: the cap is on the header, whatever its command.
    CHECK(decode(signature + bytes{0x20, 0x00, 0x0F, 0xF1}).reason == proxy_protocol_error::too_large);
}

TEST_CASE("v2: HAProxy's TLV validation vectors") {
    // c1: AUTHORITY "12345" within the header.
    const bytes good = v2(0x21, 0x11, v4_block + tlv(0x02, text("12345")));
    const outcome c1 = decode(good + text("GET / HTTP/1.1\r\n\r\n"));
    REQUIRE(c1.status == parse_status::done);
    CHECK(c1.consumed == 36);
    REQUIRE(c1.header.authority);
    CHECK(*c1.header.authority == "12345");
    CHECK(c1.header.source->text() == "127.0.0.1:42");
    CHECK(c1.header.destination->text() == "127.0.0.1:1337");
    REQUIRE(c1.header.tlvs.size() == 1);
    CHECK(c1.header.tlvs[0] == proxy_tlv{0x02, text("12345")});

    // c2: a TLV after the header's end is payload, not header.
    const outcome c2 = decode(good + tlv(0x02, text("54321")));
    REQUIRE(c2.status == parse_status::done);
    CHECK(c2.consumed == 36);
    CHECK(*c2.header.authority == "12345");

    // c3: a TLV running past the header length.
    const bytes c3 = signature + bytes{0x21, 0x11, 0x00, 0x14} + v4_block + tlv(0x02, text("1234512345"));
    check_refused(c3, proxy_protocol_error::malformed);

    // c4: TLVs that do not end with the header (one byte of the request left as a TLV head).
    const bytes c4 = signature + bytes{0x21, 0x11, 0x00, 0x14} + v4_block + tlv(0x02, text("1234")) + text("GET /");
    check_refused(c4, proxy_protocol_error::malformed);
}

TEST_CASE("v2: go-proxyproto's truncated TLVs and its zero-padded headers") {
    for (const bytes& broken : {bytes{0xE1}, bytes{0xE2, 0x00}, bytes{0xE3, 0x00, 0x01}, bytes{0xE3, 0x00, 0x02, 0x00}}) {
        check_refused(v2(0x21, 0x11, v4_block + broken), proxy_protocol_error::malformed);
    }
    // Padded to a length of 84 with zeros: empty type-0 TLVs, then the payload.
    const outcome four = decode(v2(0x21, 0x11, v4_block + bytes(84 - 12, 0)) + bytes{0x99, 0x97, 0x98});
    REQUIRE(four.status == parse_status::done);
    CHECK(four.consumed == 100);
    CHECK(four.header.tlvs.size() == 24);
    const outcome six = decode(v2(0x21, 0x21, bytes(36, 0x01) + bytes(84 - 36, 0)) + bytes{0x99});
    REQUIRE(six.status == parse_status::done);
    CHECK(six.header.tlvs.size() == 16);

    // Their other refusals: a header whose length claims bytes still to come just waits for them.
    check_incomplete(signature);
    check_incomplete(signature + bytes{0x21});
    check_incomplete(signature + bytes{0x21, 0x11});
    check_incomplete(signature + bytes{0x21, 0x11, 0x00, 0x0C});
    check_incomplete(signature + bytes{0x21, 0x21, 0x00, 0x24} + v4_block);
    check_refused(signature + bytes{0x21, 0x11, 0x00, 0x00} + bytes(36, 1), proxy_protocol_error::malformed);
    check_refused(signature + bytes{0x99}, proxy_protocol_error::malformed);
    check_refused(bytes(signature.begin() + 2, signature.end()), proxy_protocol_error::malformed);
}

TEST_CASE("v2: AUTHORITY and UNIQUE_ID are exposed; the ones spliced reads may appear once") {
    const bytes id(128, 0xAB);
    const outcome o = decode(v2(0x21, 0x11, v4_block + tlv(0x01, text("h2")) + tlv(0x02, text("www.example.com")) +
                                                tlv(0x05, id) + tlv(0x04, bytes(7, 0)) + tlv(0xE0, text("custom"))));
    REQUIRE(o.status == parse_status::done);
    CHECK(*o.header.authority == "www.example.com");
    CHECK(*o.header.unique_id == id);
    REQUIRE(o.header.tlvs.size() == 5);
    CHECK(o.header.tlvs[0].type == pp2_type_alpn);
    CHECK(o.header.tlvs[3].type == pp2_type_noop);
    CHECK(o.header.tlvs[4] == proxy_tlv{0xE0, text("custom")});
    CHECK_FALSE(o.header.crc32c_checked);

    check_refused(v2(0x21, 0x11, v4_block + tlv(0x05, bytes(129, 1))), proxy_protocol_error::malformed);
    check_refused(v2(0x21, 0x11, v4_block + tlv(0x02, text("a")) + tlv(0x02, text("b"))), proxy_protocol_error::malformed);
    check_refused(v2(0x21, 0x11, v4_block + tlv(0x05, text("a")) + tlv(0x05, text("a"))), proxy_protocol_error::malformed);
    // Other types may repeat.
    CHECK(decode(v2(0x21, 0x11, v4_block + tlv(0x04, {}) + tlv(0x04, {}))).status == parse_status::done);
    // TLVs after a UNIX or UNSPEC block are read too.
    const outcome unix_stream = decode(v2(0x21, 0x31, bytes(216, 0x2F) + tlv(0x02, text("u"))));
    REQUIRE(unix_stream.status == parse_status::done);
    CHECK(*unix_stream.header.authority == "u");
    const outcome unspec = decode(v2(0x21, 0x00, tlv(0x05, text("id"))));
    REQUIRE(unspec.status == parse_status::done);
    CHECK_FALSE(unspec.header.has_addresses());
    CHECK(*unspec.header.unique_id == text("id"));
}

TEST_CASE("v2: CRC32C is the Castagnoli CRC (check value 0xE3069283)") {
    CHECK(crc32c(text("123456789")) == 0xE3069283u);
    CHECK(crc32c({}) == 0x00000000u);
}

TEST_CASE("v2: a CRC32C TLV is checked over the whole header with its own field zeroed") {
    const bytes zeroed = v2(0x21, 0x11, v4_block + tlv(0x02, text("example.com")) + tlv(0x03, bytes(4, 0)) +
                                            tlv(0x05, text("conn-1")));
    const std::size_t crc_at = 16 + 12 + 3 + 11 + 3;
    const bytes good = with_crc(zeroed, crc_at);

    const outcome ok = decode(good + text("payload"));
    REQUIRE(ok.status == parse_status::done);
    CHECK(ok.header.crc32c_checked);
    CHECK(ok.consumed == good.size());

    // Any flipped bit anywhere in the header (checksum included) is a bad_crc.
    for (std::size_t i = 16; i < good.size(); ++i) {
        bytes bad = good;
        bad[i] ^= 0x01;
        const outcome o = feed_in(bad, {bad.size()});
        INFO("flipped byte " << i);
        CHECK(o.status == parse_status::invalid);
        // Flipping a TLV type or length byte may break the framing first.
        CHECK((o.reason == proxy_protocol_error::bad_crc || o.reason == proxy_protocol_error::malformed));
        const bool value_byte = i < 16 + 12 || (i >= 31 && i < 42) || (i >= crc_at && i < crc_at + 4) || i >= 52;
        if (value_byte) CHECK(o.reason == proxy_protocol_error::bad_crc);
    }
    bytes bad_address = good;
    bad_address[17] ^= 0x80;
    check_refused(bad_address, proxy_protocol_error::bad_crc);
    check_refused(zeroed, proxy_protocol_error::bad_crc);  // all zeros is not the checksum of this header

    // Absent: nothing to check. Wrong size or twice: malformed.
    const outcome absent = decode(v2(0x21, 0x11, v4_block + tlv(0x02, text("example.com"))));
    REQUIRE(absent.status == parse_status::done);
    CHECK_FALSE(absent.header.crc32c_checked);
    check_refused(v2(0x21, 0x11, v4_block + tlv(0x03, bytes(3, 0))), proxy_protocol_error::malformed);
    check_refused(v2(0x21, 0x11, v4_block + tlv(0x03, bytes(5, 0))), proxy_protocol_error::malformed);
    const bytes twice = with_crc(v2(0x21, 0x11, v4_block + tlv(0x03, bytes(4, 0)) + tlv(0x03, bytes(4, 0))), 31);
    check_refused(twice, proxy_protocol_error::malformed);

    // Also on IPv6 and with the TLV first.
    const bytes six = with_crc(v2(0x21, 0x21, bytes(36, 0x42) + tlv(0x03, bytes(4, 0))), 16 + 36 + 3);
    const outcome ok6 = decode(six);
    REQUIRE(ok6.status == parse_status::done);
    CHECK(ok6.header.crc32c_checked);
}

TEST_CASE("v2: every prefix of a header with TLVs waits for more, taking all of it") {
    const bytes header = v2(0x21, 0x21, bytes(36, 0x07) + tlv(0x02, text("a.example")) + tlv(0x05, text("id-7")));
    for (std::size_t n = 0; n < header.size(); ++n) {
        INFO("prefix " << n);
        check_incomplete(bytes(header.begin(), header.begin() + static_cast<std::ptrdiff_t>(n)));
    }
    CHECK(decode(header).status == parse_status::done);
}

TEST_CASE("random chunkings of every kind of header give the same outcome as one feed") {
    const std::vector<bytes> inputs = {
        text("PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET /"),
        text("PROXY TCP6 ::1 ::2 1 2\r\n"),
        text("PROXY UNKNOWN\r\nxyz"),
        text("PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n"),
        v2(0x21, 0x11, v4_block + tlv(0x02, text("12345"))) + text("tail"),
        v2(0x20, 0x00, bytes(40, 0xEE)) + text("tail"),
        v2(0x21, 0x11, v4_block + bytes{0xE3, 0x00}),
        with_crc(v2(0x21, 0x11, v4_block + tlv(0x03, bytes(4, 0))), 31) + text("x"),
    };
    std::mt19937 random(12345);
    for (const bytes& input : inputs) {
        const outcome whole = feed_in(input, {input.size()});
        for (int round = 0; round < 200; ++round) {
            std::vector<std::size_t> pieces;
            for (int i = 0; i < 40; ++i) pieces.push_back(1 + random() % 9);
            CHECK(feed_in(input, pieces) == whole);
        }
    }
}

// ---- encoders ----

TEST_CASE("encode_v1 writes the spec's line for IPv4 and IPv6") {
    const bytes a = encode_v1(endpoint("192.168.0.1", 56324), endpoint("192.168.0.11", 443));
    CHECK(std::string(a.begin(), a.end()) == "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n");
    const bytes b = encode_v1(endpoint("2001:db8::1", 1), endpoint("2001:db8::2", 65535));
    CHECK(std::string(b.begin(), b.end()) == "PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n");
    const bytes c = encode_v1(endpoint("10.0.0.1", 5), endpoint("::1", 6));
    CHECK(std::string(c.begin(), c.end()) == "PROXY TCP6 ::ffff:10.0.0.1 ::1 5 6\r\n");
    const spliced::net::address f39 = endpoint("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535);
    CHECK(encode_v1(f39, f39).size() == 104);
}

TEST_CASE("encode_v2 writes signature, PROXY, family, addresses, then AUTHORITY if any and UNIQUE_ID") {
    const bytes id = text("42");
    const bytes out = encode_v2(endpoint("1.2.3.4", 773), endpoint("0.1.1.2", 2), "", id);
    const bytes expected = signature + bytes{0x21, 0x11, 0x00, 0x11, 0x01, 0x02, 0x03, 0x04, 0x00, 0x01,
                                             0x01, 0x02, 0x03, 0x05, 0x00, 0x02, 0x05, 0x00, 0x02, '4', '2'};
    CHECK(out == expected);
    const bytes with_authority = encode_v2(endpoint("1.2.3.4", 773), endpoint("0.1.1.2", 2), "a.b", id);
    CHECK(with_authority.size() == expected.size() + 6);
    CHECK(with_authority[28] == pp2_type_authority);
}

TEST_CASE("encode_v2 refuses a UNIQUE_ID outside 1..128 bytes and a header over the 4096-byte cap") {
    const spliced::net::address a = endpoint("1.2.3.4", 1);
    CHECK(encode_v2(a, a, "x", {}).empty());
    CHECK(encode_v2(a, a, "x", bytes(129, 1)).empty());
    CHECK_FALSE(encode_v2(a, a, "x", bytes(128, 1)).empty());
    CHECK_FALSE(encode_v2(a, a, "x", bytes(1, 1)).empty());
    const spliced::net::address six = endpoint("::1", 1);
    const std::size_t room = max_v2_header - 16 - 36 - 3 - 3 - 1;  // authority that just fits beside a 1-byte id
    CHECK(encode_v2(six, six, std::string(room, 'a'), bytes(1, 1)).size() == max_v2_header);
    CHECK(encode_v2(six, six, std::string(room + 1, 'a'), bytes(1, 1)).empty());
}

TEST_CASE("encode then decode gives back the same fields, for both versions and every family mix") {
    const std::vector<std::pair<spliced::net::address, spliced::net::address>> pairs = {
        {endpoint("192.0.2.1", 50000), endpoint("198.51.100.7", 443)},
        {endpoint("2001:db8::1", 1), endpoint("2001:db8:ffff::2", 65535)},
        {endpoint("0.0.0.0", 0), endpoint("255.255.255.255", 65535)},
        {endpoint("::", 0), endpoint("::ffff:1.2.3.4", 80)},
        {endpoint("192.0.2.1", 50000), endpoint("2001:db8::9", 443)},  // mixed: both sent as IPv6
        {endpoint("2001:db8::9", 443), endpoint("192.0.2.1", 50000)},
    };
    for (const auto& [src, dst] : pairs) {
        INFO(src.text() << " -> " << dst.text());
        const bool mixed = src.is_v6() != dst.is_v6();
        const spliced::net::address want_src = mixed ? src.as_v6() : src;
        const spliced::net::address want_dst = mixed ? dst.as_v6() : dst;

        const outcome one = decode(encode_v1(src, dst) + text("payload"));
        REQUIRE(one.status == parse_status::done);
        CHECK(one.consumed == encode_v1(src, dst).size());
        CHECK(*one.header.source == want_src);
        CHECK(*one.header.destination == want_dst);

        const bytes id = text("conn-123456");
        const bytes header = encode_v2(src, dst, "www.example.com", id);
        const outcome two = decode(header + text("payload"));
        REQUIRE(two.status == parse_status::done);
        CHECK(two.consumed == header.size());
        CHECK(two.header.family == (want_src.is_v6() ? proxy_family::tcp6 : proxy_family::tcp4));
        CHECK(*two.header.source == want_src);
        CHECK(*two.header.destination == want_dst);
        CHECK(*two.header.authority == "www.example.com");
        CHECK(*two.header.unique_id == id);

        const outcome bare = decode(encode_v2(src, dst, "", id));
        REQUIRE(bare.status == parse_status::done);
        CHECK_FALSE(bare.header.authority);
        CHECK(bare.header.tlvs.size() == 1);
    }
}

TEST_CASE("addresses convert to and from socket addresses and print like the access log") {
    for (const auto& e : {endpoint("203.0.113.5", 8080), endpoint("2001:db8::5", 443)}) {
        CHECK(e.data()->sa_family == (e.is_v6() ? AF_INET6 : AF_INET));
        CHECK(spliced::net::address::from(e.data()) == e);
    }
    sockaddr_storage unix_address{};
    unix_address.ss_family = AF_UNIX;
    CHECK(spliced::net::address::from(reinterpret_cast<const sockaddr*>(&unix_address)).empty());
    CHECK(endpoint("203.0.113.5", 8080).text() == "203.0.113.5:8080");
    CHECK(endpoint("2001:db8::5", 443).text() == "[2001:db8::5]:443");
    CHECK(endpoint("10.1.2.3", 9).as_v6().text() == "[::ffff:10.1.2.3]:9");
    CHECK(endpoint("10.1.2.3", 9).as_v6().unmapped() == endpoint("10.1.2.3", 9));
    CHECK(endpoint("10.1.2.3", 9).with_port(10).text() == "10.1.2.3:10");
}

TEST_CASE("reasons print as the metric label values, the session's three included") {
    CHECK(to_string(proxy_protocol_error::malformed) == "malformed");
    CHECK(to_string(proxy_protocol_error::too_large) == "too_large");
    CHECK(to_string(proxy_protocol_error::unsupported) == "unsupported");
    CHECK(to_string(proxy_protocol_error::bad_crc) == "bad_crc");
    CHECK(to_string(proxy_protocol_error::timeout) == "timeout");
    CHECK(to_string(proxy_protocol_error::untrusted) == "untrusted");
    CHECK(to_string(proxy_protocol_error::closed) == "closed");
}
