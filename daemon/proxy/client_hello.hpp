// An incremental TLS ClientHello reader for SNI routing: the server name and ALPN list, reassembled across TCP
// segments and TLS records, without consuming anything.
#pragma once

#include "proxy/parse_status.hpp"
#include "sys/enum_names.hpp"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace spliced::proxy {

// Why a ClientHello was not read; the session routes every one of them like "no SNI" (the default route).
enum class client_hello_error : std::uint8_t {
    not_tls,    // the first record is not a TLS handshake record, or its first message is not a ClientHello
    malformed,  // a TLS ClientHello that breaks a length, a bound or a rule of RFC 8446 / 6066 / 7301
    too_large,  // the ClientHello message is longer than max_client_hello
};
}  // namespace spliced::proxy

namespace spliced::sys {
template <>
struct enum_names<proxy::client_hello_error> {
    static constexpr std::array table{std::pair{proxy::client_hello_error::not_tls, "not_tls"},
                                      std::pair{proxy::client_hello_error::malformed, "malformed"},
                                      std::pair{proxy::client_hello_error::too_large, "too_large"}};
};
}  // namespace spliced::sys

namespace spliced::proxy {

inline std::string_view to_string(client_hello_error reason) { return sys::name_of(reason); }


struct client_hello {
    std::optional<std::string> server_name;  // SNI host_name, lower-cased, no trailing dot; nullopt without SNI
    std::vector<std::string> alpn;            // ALPN protocols in the client's order; empty without ALPN
    std::uint16_t legacy_version = 0;         // ClientHello.legacy_version (0x0303 for TLS 1.2 and 1.3)
};

// The cap on the handshake message: type, 3-byte length and body; record headers do not count.
inline constexpr std::size_t max_client_hello = 16 * 1024;
// The longest host_name accepted (OpenSSL's own bound; a DNS name is at most 253 without its trailing dot).
inline constexpr std::size_t max_server_name = 255;

// Reads the first handshake message of a connection. Nothing is consumed: the caller forwards every byte it
// fed, as it was, to the backend. Once finished, further calls repeat the outcome.
class client_hello_parser {
public:
    struct result {
        parse_status status = parse_status::need_more;
        client_hello_error reason = client_hello_error::not_tls;  // meaningful on invalid only
    };

    result feed(std::span<const std::uint8_t> bytes);
    // Meaningful once feed() returned done.
    const client_hello& hello() const { return hello_; }

private:
    result refuse(client_hello_error reason);
    result parse_message();

    std::uint8_t record_header_[5] = {};
    std::size_t record_header_size_ = 0;
    std::size_t record_left_ = 0;  // payload bytes of the current record not yet read
    bool first_record_ = true;
    std::vector<std::uint8_t> message_;  // the handshake message so far
    std::size_t message_size_ = 0;       // 4 + its length, once the length is read
    std::optional<result> final_;
    client_hello hello_;
};

}  // namespace spliced::proxy
