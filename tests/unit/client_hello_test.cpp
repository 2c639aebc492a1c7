// TLS ClientHello reader: hellos made by OpenSSL itself, re-framed and cut every way, and hand-built broken ones.
#include "proxy/client_hello.hpp"
#include "split_feeder.hpp"

#include <openssl/ssl.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <iterator>
#include <optional>
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

bytes u16(std::size_t v) { return {static_cast<std::uint8_t>(v >> 8), static_cast<std::uint8_t>(v)}; }
bytes u24(std::size_t v) {
    return {static_cast<std::uint8_t>(v >> 16), static_cast<std::uint8_t>(v >> 8), static_cast<std::uint8_t>(v)};
}

struct openssl_options {
    openssl_options(std::string sni_ = {}, std::vector<std::string> alpn_ = {}, int max = TLS1_3_VERSION,
                    int min = TLS1_2_VERSION)
        : sni(std::move(sni_)), alpn(std::move(alpn_)), max_version(max), min_version(min) {}
    std::string sni;  // none when empty
    std::vector<std::string> alpn;
    int max_version;
    int min_version;
};

// The first flight of an OpenSSL client: a ClientHello in one or more TLS records.
bytes openssl_hello(const openssl_options& options) {
    SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
    REQUIRE(ctx != nullptr);
    if (options.min_version < TLS1_2_VERSION) SSL_CTX_set_security_level(ctx, 0);  // let TLS 1.0 through
    REQUIRE(SSL_CTX_set_min_proto_version(ctx, options.min_version) == 1);
    REQUIRE(SSL_CTX_set_max_proto_version(ctx, options.max_version) == 1);
    SSL* ssl = SSL_new(ctx);
    REQUIRE(ssl != nullptr);
    BIO* in = BIO_new(BIO_s_mem());
    BIO* out = BIO_new(BIO_s_mem());
    SSL_set_bio(ssl, in, out);
    if (!options.sni.empty()) REQUIRE(SSL_set_tlsext_host_name(ssl, options.sni.c_str()) == 1);
    if (!options.alpn.empty()) {
        bytes wire;
        for (const auto& p : options.alpn) wire = wire + bytes{static_cast<std::uint8_t>(p.size())} + text(p);
        REQUIRE(SSL_set_alpn_protos(ssl, wire.data(), static_cast<unsigned>(wire.size())) == 0);
    }
    SSL_set_connect_state(ssl);
    const int rc = SSL_connect(ssl);
    REQUIRE(rc <= 0);
    REQUIRE(SSL_get_error(ssl, rc) == SSL_ERROR_WANT_READ);
    bytes hello(static_cast<std::size_t>(BIO_pending(out)));
    REQUIRE(BIO_read(out, hello.data(), static_cast<int>(hello.size())) == static_cast<int>(hello.size()));
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    REQUIRE(hello.size() > 5);
    return hello;
}

// The handshake bytes carried by a run of TLS records.
bytes record_payload(const bytes& records) {
    bytes payload;
    std::size_t pos = 0;
    while (pos < records.size()) {
        REQUIRE(records.size() - pos >= 5);
        const std::size_t size = (std::size_t{records[pos + 3]} << 8) | records[pos + 4];
        REQUIRE(records.size() - pos - 5 >= size);
        payload.insert(payload.end(), records.begin() + static_cast<std::ptrdiff_t>(pos + 5),
                       records.begin() + static_cast<std::ptrdiff_t>(pos + 5 + size));
        pos += 5 + size;
    }
    return payload;
}

// `payload` in handshake records of at most `size` bytes each.
bytes frame(const bytes& payload, std::size_t size, std::uint16_t version = 0x0301) {
    bytes out;
    for (std::size_t at = 0; at < payload.size(); at += size) {
        const std::size_t n = std::min(size, payload.size() - at);
        out = out + bytes{22} + u16(version) + u16(n);
        out.insert(out.end(), payload.begin() + static_cast<std::ptrdiff_t>(at),
                   payload.begin() + static_cast<std::ptrdiff_t>(at + n));
    }
    return out;
}

bytes extension(std::uint16_t type, const bytes& data) { return u16(type) + u16(data.size()) + data; }

bytes sni_extension(const std::vector<std::string>& names) {
    bytes list;
    for (const auto& n : names) list = list + bytes{0} + u16(n.size()) + text(n);
    return extension(0, u16(list.size()) + list);
}

bytes alpn_extension(const std::vector<std::string>& names) {
    bytes list;
    for (const auto& n : names) list = list + bytes{static_cast<std::uint8_t>(n.size())} + text(n);
    return extension(16, u16(list.size()) + list);
}

// A hand-built ClientHello handshake message around `extensions` (nullopt: no extensions block at all).
struct hello_parts {
    bytes version = {0x03, 0x03};
    bytes random = bytes(32, 0x11);
    bytes session_id = bytes(32, 0x22);
    bytes ciphers = {0x13, 0x01, 0x13, 0x02, 0x00, 0x2F};
    bytes compression = {0x00};
    std::optional<bytes> extensions = sni_extension({"example.com"});

    bytes body() const {
        bytes b = version + random + bytes{static_cast<std::uint8_t>(session_id.size())} + session_id +
                  u16(ciphers.size()) + ciphers + bytes{static_cast<std::uint8_t>(compression.size())} + compression;
        if (extensions) b = b + u16(extensions->size()) + *extensions;
        return b;
    }
    bytes message() const { return bytes{1} + u24(body().size()) + body(); }
    bytes records(std::size_t size = 16384) const { return frame(message(), size); }
};

struct outcome {
    parse_status status = parse_status::need_more;
    client_hello_error reason = client_hello_error::not_tls;
    std::optional<std::string> server_name;
    std::vector<std::string> alpn;
    std::uint16_t legacy_version = 0;
    bool operator==(const outcome& o) const {
        if (status != o.status) return false;
        if (status == parse_status::invalid) return reason == o.reason;
        if (status == parse_status::done) {
            return server_name == o.server_name && alpn == o.alpn && legacy_version == o.legacy_version;
        }
        return true;
    }
};

outcome feed_in(const bytes& input, const std::vector<std::size_t>& pieces) {
    client_hello_parser parser;
    const auto r = spliced::test::feed_pieces(parser, input, pieces, [](const auto&, std::size_t) {},
                                              [](bool kept) { CHECK(kept); });
    outcome out;
    out.status = r.status;
    out.reason = r.reason;
    if (r.status == parse_status::done) {
        out.server_name = parser.hello().server_name;
        out.alpn = parser.hello().alpn;
        out.legacy_version = parser.hello().legacy_version;
    }
    return out;
}

// Whole, byte at a time and split at every point: one outcome.
outcome parse(const bytes& input) {
    const outcome whole = feed_in(input, {input.size() + 1});
    CHECK(feed_in(input, {1}) == whole);
    for (std::size_t split = 1; split < input.size(); ++split) {
        INFO("split at " << split);
        CHECK(feed_in(input, {split, input.size()}) == whole);
    }
    return whole;
}

void check_invalid(const bytes& input, client_hello_error reason) {
    const outcome o = parse(input);
    CHECK(o.status == parse_status::invalid);
    CHECK(o.reason == reason);
}

void check_malformed(const hello_parts& parts) { check_invalid(parts.records(), client_hello_error::malformed); }

// Bytes a parser must see before it refuses `input` (or input.size() + 1 if it never does).
std::size_t bytes_to_refuse(const bytes& input) {
    client_hello_parser parser;
    for (std::size_t i = 0; i < input.size(); ++i) {
        if (parser.feed(std::span<const std::uint8_t>(input).subspan(i, 1)).status == parse_status::invalid) {
            return i + 1;
        }
    }
    return input.size() + 1;
}

}  // namespace

TEST_CASE("OpenSSL TLS 1.3 hello: SNI and ALPN are read, whole, byte at a time and split anywhere") {
    const bytes hello = openssl_hello({"www.example.com", {"h2", "http/1.1"}});
    const outcome o = parse(hello);
    REQUIRE(o.status == parse_status::done);
    CHECK(o.server_name == "www.example.com");
    CHECK(o.alpn == std::vector<std::string>{"h2", "http/1.1"});
    CHECK(o.legacy_version == 0x0303);
}

TEST_CASE("OpenSSL TLS 1.2-only and TLS 1.0 hellos are read too") {
    const outcome twelve = parse(openssl_hello({"api.example.org", {}, TLS1_2_VERSION}));
    REQUIRE(twelve.status == parse_status::done);
    CHECK(twelve.server_name == "api.example.org");
    CHECK(twelve.alpn.empty());
    CHECK(twelve.legacy_version == 0x0303);

    const outcome ten = parse(openssl_hello({"old.example", {}, TLS1_VERSION, TLS1_VERSION}));
    REQUIRE(ten.status == parse_status::done);
    CHECK(ten.server_name == "old.example");
    CHECK(ten.legacy_version == 0x0301);
}

TEST_CASE("a hello without SNI is done with no name") {
    const outcome o = parse(openssl_hello({"", {"h2"}}));
    REQUIRE(o.status == parse_status::done);
    CHECK_FALSE(o.server_name);
    CHECK(o.alpn == std::vector<std::string>{"h2"});

    hello_parts no_extensions;
    no_extensions.extensions.reset();
    const outcome bare = parse(no_extensions.records());
    REQUIRE(bare.status == parse_status::done);
    CHECK_FALSE(bare.server_name);

    hello_parts other_type;  // a ServerNameList holding only a name type other than host_name
    other_type.extensions = extension(0, u16(6) + bytes{1} + u16(3) + text("abc"));
    const outcome other = parse(other_type.records());
    REQUIRE(other.status == parse_status::done);
    CHECK_FALSE(other.server_name);
}

TEST_CASE("the name is lower-cased and loses its trailing dot") {
    const outcome upper = parse(openssl_hello({"WWW.Example.COM"}));
    REQUIRE(upper.status == parse_status::done);
    CHECK(upper.server_name == "www.example.com");
    const outcome dot = parse(openssl_hello({"example.com."}));
    REQUIRE(dot.status == parse_status::done);
    CHECK(dot.server_name == "example.com");
    hello_parts underscore;
    underscore.extensions = sni_extension({"_acme.Example.com"});
    CHECK(parse(underscore.records()).server_name == "_acme.example.com");
}

TEST_CASE("long names: a 253-character DNS name and OpenSSL's 255-byte maximum pass, 256 bytes do not") {
    const std::string label(63, 'a');
    const std::string dns = label + "." + label + "." + label + "." + std::string(61, 'b');
    REQUIRE(dns.size() == 253);
    const outcome o = parse(openssl_hello({dns}));
    REQUIRE(o.status == parse_status::done);
    CHECK(o.server_name == dns);
    const std::string longest = dns + "c.";  // 255 bytes as sent, 254 without the dot
    REQUIRE(longest.size() == max_server_name);
    const outcome o255 = parse(openssl_hello({longest}));
    REQUIRE(o255.status == parse_status::done);
    CHECK(o255.server_name == dns + "c");
    hello_parts too_long;
    too_long.extensions = sni_extension({std::string(256, 'a')});
    check_malformed(too_long);
}

TEST_CASE("a hello re-framed into many small records reads the same as in one record") {
    const bytes hello = openssl_hello({"split.example.net", {"h2", "http/1.1"}});
    const bytes payload = record_payload(hello);
    const outcome one = parse(frame(payload, 16384));
    REQUIRE(one.status == parse_status::done);
    for (std::size_t size : {std::size_t{1}, std::size_t{2}, std::size_t{3}, std::size_t{4}, std::size_t{5},
                             std::size_t{7}, std::size_t{64}, std::size_t{100}, payload.size() - 1}) {
        INFO("records of " << size);
        const bytes records = frame(payload, size);
        CHECK(feed_in(records, {records.size()}) == one);
        CHECK(feed_in(records, {1}) == one);
        CHECK(feed_in(records, {3, 11, 5}) == one);
    }
    CHECK(parse(frame(payload, 13)) == one);  // every split of the 13-byte framing
    // Any record version from 0x0301 to 0x0304 is accepted, and they may differ from record to record.
    for (std::uint16_t version : {0x0301, 0x0302, 0x0303, 0x0304}) {
        CHECK(feed_in(frame(payload, 50, version), {1}) == one);
    }
    bytes mixed = frame(bytes(payload.begin(), payload.begin() + 10), 10, 0x0301) +
                  frame(bytes(payload.begin() + 10, payload.end()), 16384, 0x0303);
    CHECK(feed_in(mixed, {mixed.size()}) == one);
}

TEST_CASE("OpenSSL's hello over 16 KiB (many ALPN entries, two records) is too_large on its length") {
    std::vector<std::string> many;
    for (int i = 0; i < 2000; ++i) many.push_back("proto-" + std::to_string(1000 + i));
    const bytes hello = openssl_hello({"big.example.com", many});
    REQUIRE(hello.size() > 16384 + 10);
    const outcome o = parse(hello);
    CHECK(o.status == parse_status::invalid);
    CHECK(o.reason == client_hello_error::too_large);
    CHECK(bytes_to_refuse(hello) == 9);  // record header + handshake type and length
}

TEST_CASE("the 16 KiB cap counts the handshake message only: 16384 bytes pass, 16385 do not") {
    hello_parts parts;
    const std::size_t base = parts.message().size();
    const auto padded = [&](std::size_t message_size) {
        hello_parts p;
        // A padding extension (RFC 7685) sized so that the message is exactly message_size bytes.
        p.extensions = *p.extensions + extension(21, bytes(message_size - base - 4, 0));
        REQUIRE(p.message().size() == message_size);
        return p;
    };
    const hello_parts at_cap = padded(max_client_hello);
    // Record overhead does not count: the same message in 1000-byte records is still within the cap.
    for (std::size_t size : {std::size_t{16384}, std::size_t{1000}}) {
        const bytes records = at_cap.records(size);
        REQUIRE(records.size() > max_client_hello);
        const outcome o = feed_in(records, {1});
        REQUIRE(o.status == parse_status::done);
        CHECK(o.server_name == "example.com");
    }
    check_invalid(padded(max_client_hello + 1).records(1000), client_hello_error::too_large);
    check_invalid(frame(bytes{1, 0xFF, 0xFF, 0xFF}, 100), client_hello_error::too_large);
}

TEST_CASE("not TLS at all is said after as few bytes as possible") {
    CHECK(bytes_to_refuse(text("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")) == 1);
    CHECK(bytes_to_refuse(text("SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")) == 1);
    CHECK(bytes_to_refuse(text("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n")) == 1);
    CHECK(bytes_to_refuse(bytes{0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A}) == 1);
    CHECK(bytes_to_refuse(bytes{0x80, 0x2E, 0x01, 0x03, 0x01}) == 1);  // SSLv2-style hello
    CHECK(bytes_to_refuse(bytes{0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28}) == 1);  // an alert
    CHECK(bytes_to_refuse(bytes{0x16, 0x02, 0x00}) == 2);
    CHECK(bytes_to_refuse(bytes{0x16, 0x03, 0x00, 0x00, 0x10}) == 3);  // SSL 3.0 record
    CHECK(bytes_to_refuse(bytes{0x16, 0x03, 0x05, 0x00, 0x10}) == 3);
    CHECK(bytes_to_refuse(bytes{0x16, 0x03, 0x01, 0x00, 0x04, 0x02, 0x00, 0x00, 0x00}) == 6);  // a ServerHello
    for (const bytes& input : {text("GET / HTTP/1.1\r\n\r\n"), text("SSH-2.0-x\r\n"), text("PROXY UNKNOWN\r\n"),
                               bytes{0x16, 0x03, 0x03, 0x00, 0x04, 0x0B, 0x00, 0x00, 0x00}}) {
        check_invalid(input, client_hello_error::not_tls);
    }
}

TEST_CASE("every truncation of a hello waits for more") {
    for (const bytes& hello : {openssl_hello({"cut.example.com", {"h2"}}),
                               frame(record_payload(openssl_hello({"cut.example.com"})), 40)}) {
        for (std::size_t n = 0; n < hello.size(); ++n) {
            const bytes cut(hello.begin(), hello.begin() + static_cast<std::ptrdiff_t>(n));
            const outcome o = feed_in(cut, {cut.size()});
            INFO("first " << n << " bytes");
            CHECK(o.status == parse_status::need_more);
        }
        CHECK(feed_in(hello, {hello.size()}).status == parse_status::done);
    }
}

TEST_CASE("bytes after the hello do not change it") {
    const bytes hello = openssl_hello({"early.example.com"});
    const outcome alone = feed_in(hello, {hello.size()});
    const bytes more = hello + bytes{0x17, 0x03, 0x03, 0x00, 0x05, 1, 2, 3, 4, 5} + text("junk");
    CHECK(parse(more) == alone);
    // A record that carries more than the hello (a second handshake message) is fine too.
    const bytes payload = record_payload(hello) + bytes{0x0B, 0x00, 0x00, 0x00};
    CHECK(feed_in(frame(payload, 16384), {1}) == alone);
}

TEST_CASE("record framing is checked: empty, oversized, or non-handshake records inside a hello") {
    const bytes payload = hello_parts{}.message();
    check_invalid(bytes{0x16, 0x03, 0x01, 0x00, 0x00}, client_hello_error::malformed);
    check_invalid(bytes{0x16, 0x03, 0x01, 0x40, 0x01}, client_hello_error::malformed);  // 16385-byte record
    const bytes first(payload.begin(), payload.begin() + 20);
    const bytes rest(payload.begin() + 20, payload.end());
    check_invalid(frame(first, 20) + bytes{0x17, 0x03, 0x03} + u16(rest.size()) + rest, client_hello_error::malformed);
    check_invalid(frame(first, 20) + bytes{0x16, 0x03, 0x07} + u16(rest.size()) + rest, client_hello_error::malformed);
    check_invalid(frame(first, 20) + bytes{0x16, 0x04, 0x03} + u16(rest.size()) + rest, client_hello_error::malformed);
    check_invalid(frame(first, 20) + bytes{0x16, 0x03, 0x03, 0x00, 0x00}, client_hello_error::malformed);
}

TEST_CASE("every fixed field of the body must fit") {
    hello_parts p;
    p.version = {0x02, 0x00};
    check_malformed(p);
    p = {};
    p.session_id = bytes(33, 0);
    check_malformed(p);
    p = {};
    p.ciphers = {0x13};
    check_malformed(p);
    p = {};
    p.ciphers = {};
    check_malformed(p);
    p = {};
    p.compression = {};
    check_malformed(p);
    // Body shorter than its fixed fields.
    check_invalid(frame(bytes{1} + u24(10) + bytes(10, 0x03), 100), client_hello_error::malformed);
    check_invalid(frame(bytes{1, 0, 0, 0}, 100), client_hello_error::malformed);
    // A session id length running past the body.
    const bytes body = bytes{0x03, 0x03} + bytes(32, 0) + bytes{32} + bytes(5, 0);
    check_invalid(frame(bytes{1} + u24(body.size()) + body, 100), client_hello_error::malformed);
    // A 0-length session id and a lone cipher suite are fine.
    p = {};
    p.session_id = {};
    p.ciphers = {0x13, 0x01};
    CHECK(parse(p.records()).status == parse_status::done);
}

TEST_CASE("the extensions block and each extension must fit exactly") {
    hello_parts p;
    const bytes good = *p.extensions;
    // Block length one short of, or one past, what remains.
    bytes body = p.body();
    bytes shorter = body;
    shorter[body.size() - good.size() - 1] -= 1;
    check_invalid(frame(bytes{1} + u24(shorter.size()) + shorter, 1000), client_hello_error::malformed);
    bytes longer = body;
    longer[body.size() - good.size() - 1] += 1;
    check_invalid(frame(bytes{1} + u24(longer.size()) + longer, 1000), client_hello_error::malformed);
    // A byte after the extensions.
    const bytes trailing = body + bytes{0};
    check_invalid(frame(bytes{1} + u24(trailing.size()) + trailing, 1000), client_hello_error::malformed);
    // A lone byte where the block length should be.
    p.extensions.reset();
    const bytes lone = p.body() + bytes{0};
    check_invalid(frame(bytes{1} + u24(lone.size()) + lone, 1000), client_hello_error::malformed);
    // An extension whose length runs past the block, or a block ending inside an extension header.
    p.extensions = u16(23) + u16(5) + bytes{1, 2};
    check_malformed(p);
    p.extensions = bytes{0x00, 0x17, 0x00};
    check_malformed(p);
    // The same extension type twice.
    p.extensions = extension(23, {}) + extension(23, {});
    check_malformed(p);
    p.extensions = sni_extension({"a.example"}) + sni_extension({"b.example"});
    check_malformed(p);
    // Unknown and GREASE extensions are skipped.
    p.extensions = extension(0x0A0A, {}) + extension(0xFFFF, bytes(9, 7)) + sni_extension({"x.example"});
    CHECK(parse(p.records()).server_name == "x.example");
}

TEST_CASE("an SNI extension with an empty or broken name list is malformed") {
    hello_parts p;
    const auto sni_data = [&](const bytes& data) {
        p.extensions = extension(0, data);
        check_malformed(p);
    };
    sni_data({});                                                      // no list at all
    sni_data(u16(0));                                                  // empty list
    sni_data(u16(6) + bytes{0} + u16(0));                              // list length past the data
    sni_data(u16(2) + bytes{0} + u16(3) + text("abc"));                // list length short of the data
    sni_data(u16(6) + bytes{0} + u16(4) + text("abc"));                // name past the list
    sni_data(u16(2) + bytes{0, 0});                                    // entry cut inside its length
    sni_data(u16(3) + bytes{0} + u16(0));                              // empty name
    sni_data(u16(1) + bytes{0});                                       // only a type byte
    p.extensions = sni_extension({"a.example", "b.example"});          // two host_names
    check_malformed(p);
    for (const char* name : {".", "..", ".example.com", "a..b", "example.com..", "a b", "a/b", "a\\b", "exa*mple.com",
                             "caf\xC3\xA9.example", "a:443"}) {
        INFO(name);
        p.extensions = sni_extension({name});
        check_malformed(p);
    }
    p.extensions = sni_extension({std::string("a\0b", 3)});
    check_malformed(p);
}

TEST_CASE("an ALPN extension with an empty list or an empty name is malformed") {
    hello_parts p;
    const auto alpn_data = [&](const bytes& data) {
        p.extensions = extension(16, data);
        check_malformed(p);
    };
    alpn_data({});
    alpn_data(u16(0));
    alpn_data(u16(1) + bytes{0});                        // empty protocol name
    alpn_data(u16(3) + bytes{2} + text("h2") + bytes{0});  // list length short of the data
    alpn_data(u16(4) + bytes{4} + text("h2x"));           // name past the list
    p.extensions = alpn_extension({"h2", "http/1.1", "acme-tls/1"});
    const outcome o = parse(p.records());
    REQUIRE(o.status == parse_status::done);
    CHECK(o.alpn == std::vector<std::string>{"h2", "http/1.1", "acme-tls/1"});
    CHECK_FALSE(o.server_name);
}

TEST_CASE("random chunkings of OpenSSL hellos give the one-feed outcome") {
    const std::vector<bytes> inputs = {
        openssl_hello({"r1.example.com", {"h2"}}),
        openssl_hello({"", {}, TLS1_2_VERSION}),
        frame(record_payload(openssl_hello({"r2.example.com"})), 17),
    };
    std::mt19937 random(777);
    for (const bytes& input : inputs) {
        const outcome whole = feed_in(input, {input.size()});
        REQUIRE(whole.status == parse_status::done);
        for (int round = 0; round < 100; ++round) {
            std::vector<std::size_t> pieces;
            for (int i = 0; i < 64; ++i) pieces.push_back(1 + random() % 40);
            CHECK(feed_in(input, pieces) == whole);
        }
    }
}

TEST_CASE("reasons print for logs") {
    CHECK(to_string(client_hello_error::not_tls) == "not_tls");
    CHECK(to_string(client_hello_error::malformed) == "malformed");
    CHECK(to_string(client_hello_error::too_large) == "too_large");
}

TEST_CASE("ClientHellos captured from openssl s_client, curl and Python's ssl read right, whole and byte at a time") {
    // Captured on loopback by a listener that kept the first record (tests/unit/data/hello-*.bin).
    struct capture {
        const char* file;
        const char* name;
        const char* alpn;
    };
    for (const auto& c : {capture{"hello-openssl-s_client.bin", "openssl.example.com", "h2"},
                          capture{"hello-curl.bin", "curl.example.com", nullptr},
                          capture{"hello-python-ssl.bin", "python.example.com", "http/1.1"}}) {
        INFO(c.file);
        std::ifstream in(std::string(SPLICED_TEST_DATA_DIR) + "/" + c.file, std::ios::binary);
        REQUIRE(in);
        const std::vector<std::uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        REQUIRE(bytes.size() > 100);
        spliced::proxy::client_hello_parser whole;
        REQUIRE(whole.feed(bytes).status == spliced::proxy::parse_status::done);
        CHECK(whole.hello().server_name == std::optional<std::string>(c.name));
        if (c.alpn) {
            REQUIRE_FALSE(whole.hello().alpn.empty());
            CHECK(whole.hello().alpn.front() == c.alpn);
        }
        spliced::proxy::client_hello_parser bytewise;
        spliced::proxy::parse_status last = spliced::proxy::parse_status::need_more;
        for (std::size_t i = 0; i < bytes.size() && last == spliced::proxy::parse_status::need_more; ++i)
            last = bytewise.feed(std::span<const std::uint8_t>(&bytes[i], 1)).status;
        CHECK(last == spliced::proxy::parse_status::done);
        CHECK(bytewise.hello().server_name == whole.hello().server_name);
    }
}
