// PROXY protocol v1 and v2 (HAProxy's proxy-protocol.txt): an incremental header decoder and the two encoders.
#pragma once

#include "net/address.hpp"
#include "proxy/parse_status.hpp"
#include "sys/enum_names.hpp"

#include <sys/socket.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace spliced::proxy {

// Why a PROXY header was refused; to_string() gives the `reason` label of spliced_proxy_protocol_errors_total.
// The parser reports the first four; the session reports the last three itself, so that the label values
// live in one list.
enum class proxy_protocol_error : std::uint8_t {
    malformed,    // not a PROXY header, or one that breaks the spec (v1 syntax, v2 values, lengths, TLVs)
    too_large,    // a v2 header over max_v2_header bytes in total
    unsupported,  // a well-formed v2 PROXY header for a transport spliced does not proxy (UDP, UNIX datagram)
    bad_crc,      // a v2 CRC32C TLV that does not match the header
    timeout,      // session: no complete header within timeouts.handshake
    untrusted,    // session: a header from a peer outside trusted_proxies
    closed,       // session: the client closed (or reset) before the header was complete
};
}  // namespace spliced::proxy

namespace spliced::sys {
template <>
struct enum_names<proxy::proxy_protocol_error> {
    static constexpr std::array table{std::pair{proxy::proxy_protocol_error::malformed, "malformed"},
                                      std::pair{proxy::proxy_protocol_error::too_large, "too_large"},
                                      std::pair{proxy::proxy_protocol_error::unsupported, "unsupported"},
                                      std::pair{proxy::proxy_protocol_error::bad_crc, "bad_crc"},
                                      std::pair{proxy::proxy_protocol_error::timeout, "timeout"},
                                      std::pair{proxy::proxy_protocol_error::untrusted, "untrusted"},
                                      std::pair{proxy::proxy_protocol_error::closed, "closed"}};
};
}  // namespace spliced::sys

namespace spliced::proxy {

inline std::string_view to_string(proxy_protocol_error reason) { return sys::name_of(reason); }


enum class proxy_command : std::uint8_t { local, proxy };
// v1 UNKNOWN and v2 UNSPEC report unspec, v2 UNIX stream reports unix_stream; v2 LOCAL always reports unspec.
enum class proxy_family : std::uint8_t { unspec, tcp4, tcp6, unix_stream };

// Registered v2 TLV types that spliced reads or writes.
inline constexpr std::uint8_t pp2_type_alpn = 0x01;
inline constexpr std::uint8_t pp2_type_authority = 0x02;
inline constexpr std::uint8_t pp2_type_crc32c = 0x03;
inline constexpr std::uint8_t pp2_type_noop = 0x04;
inline constexpr std::uint8_t pp2_type_unique_id = 0x05;

struct proxy_tlv {
    std::uint8_t type = 0;
    std::vector<std::uint8_t> value;
    friend bool operator==(const proxy_tlv&, const proxy_tlv&) = default;
};

// A decoded header. The addresses are set only for a PROXY command over TCP4 or TCP6; otherwise the caller
// uses the socket's own addresses.
struct proxy_header {
    int version = 0;  // 1 or 2
    proxy_command command = proxy_command::proxy;
    proxy_family family = proxy_family::unspec;
    std::optional<net::address> source;
    std::optional<net::address> destination;
    std::vector<proxy_tlv> tlvs;                   // v2, in wire order (CRC32C and NOOP included)
    std::optional<std::string> authority;          // TLV 0x02, as sent
    std::optional<std::vector<std::uint8_t>> unique_id;  // TLV 0x05, 0..128 bytes
    bool crc32c_checked = false;                   // a CRC32C TLV was present and matched

    bool has_addresses() const { return source.has_value(); }
    friend bool operator==(const proxy_header&, const proxy_header&) = default;
};

// The longest v1 line, CRLF included, and the largest v2 header (16-byte fixed part included) accepted.
inline constexpr std::size_t max_v1_line = 107;
inline constexpr std::size_t max_v2_header = 4096;

// The CRC32C (Castagnoli, RFC 4960 appendix B) of some bytes.
std::uint32_t crc32c(std::span<const std::uint8_t> bytes);

// Incremental decoder of one PROXY v1 or v2 header, detected from the first byte ('P' or 0x0D; anything else
// is refused at once). Where the spec leaves room, it is strict:
// - v1: exactly `PROXY TCP4|TCP6 src dst sport dport\r\n` with single spaces, addresses of the announced
//   family by inet_pton rules, ports 0..65535 without sign or heading zero, 107 bytes at most with the CRLF;
//   `PROXY UNKNOWN` then CRLF or a space and anything up to the CRLF (ignored). A bare CR or LF is refused.
// - v2: version 2; command LOCAL or PROXY; family/transport one of 0x00 0x11 0x12 0x21 0x22 0x31 0x32 (any
//   other is malformed, under LOCAL too); under PROXY the datagram ones (0x12 0x22 0x32) are `unsupported`.
//   LOCAL skips its `len` bytes unread. PROXY needs the whole address block of its family (12, 36, 216, or 0
//   for UNSPEC) and reads TLVs in the rest, which they must fill exactly: a TLV running past the header, or
//   1-2 trailing bytes, is malformed. CRC32C must be 4 bytes; AUTHORITY, CRC32C and UNIQUE_ID (at most 128
//   bytes) may appear once each. The 4096-byte cap and a short address block are decided at the length field.
class proxy_header_parser {
public:
    struct result {
        parse_status status = parse_status::need_more;
        // Bytes of this call's input taken by the header: all of them on need_more, the header's tail on done
        // (what follows is the client's payload, left to the caller), and on invalid those read up to the
        // byte that decided. Once finished, further calls take nothing and repeat the outcome.
        std::size_t consumed = 0;
        proxy_protocol_error reason = proxy_protocol_error::malformed;  // meaningful on invalid only
    };

    result feed(std::span<const std::uint8_t> bytes);
    // The decoded header; meaningful once feed() returned done.
    const proxy_header& header() const { return header_; }
    // Header bytes taken so far, over all calls.
    std::size_t header_size() const { return buffer_.size(); }

private:
    enum class kind : std::uint8_t { unknown, v1, v2 };

    std::size_t next_checkpoint() const;
    std::optional<result> check();  // nullopt: keep going
    std::optional<result> check_v1();
    std::optional<result> check_v2();
    result finish_v1();
    result finish_v2();
    result refuse(proxy_protocol_error reason);

    kind kind_ = kind::unknown;
    std::vector<std::uint8_t> buffer_;
    std::size_t v2_total_ = 0;  // 16 + len, once the length field is read
    std::optional<result> final_;
    proxy_header header_;
};

// "PROXY TCP4 src dst sport dport\r\n". Mixed families (one IPv4, one IPv6 endpoint) are sent as TCP6 with the
// IPv4 one mapped (::ffff:a.b.c.d).
std::vector<std::uint8_t> encode_v1(const net::address& source, const net::address& destination);

// A v2 PROXY header over TCP4 or TCP6 (mixed families: TCP6, IPv4 mapped), with an AUTHORITY TLV when
// `authority` is not empty and always a UNIQUE_ID TLV. Returns an empty vector, refusing, when `unique_id` is
// not 1 to 128 bytes or the header would exceed max_v2_header.
std::vector<std::uint8_t> encode_v2(const net::address& source, const net::address& destination,
                                    std::string_view authority, std::span<const std::uint8_t> unique_id);

}  // namespace spliced::proxy
