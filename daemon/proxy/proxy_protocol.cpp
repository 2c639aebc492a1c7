// PROXY protocol v1 and v2 (HAProxy's proxy-protocol.txt): an incremental header decoder and the two encoders.
#include "proxy/proxy_protocol.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <boost/crc.hpp>
#include <cstring>

namespace spliced::proxy {

namespace {

constexpr std::array<std::uint8_t, 12> v2_signature{0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                                    0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
constexpr std::string_view v1_signature = "PROXY ";
constexpr std::size_t v2_fixed = 16;  // signature, version/command, family/transport, length

// CRC32C (Castagnoli): reflected polynomial 0x1EDC6F41, initial and final XOR all ones.
using crc32c_engine = boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true>;

// Address block size of a v2 family/transport byte for the PROXY command; nullopt for undefined values.
std::optional<std::size_t> v2_address_size(std::uint8_t family) {
    switch (family) {
    case 0x00: return 0;                    // UNSPEC
    case 0x11: case 0x12: return 12;        // TCP4, UDP4: 2 * 4 + 2 * 2
    case 0x21: case 0x22: return 36;        // TCP6, UDP6: 2 * 16 + 2 * 2
    case 0x31: case 0x32: return 216;       // UNIX stream, UNIX datagram: 2 * 108
    default: return std::nullopt;
    }
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_hex(char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

// A v1 port: 1 to 5 digits, no leading zero (but "0"), at most 65535.
std::optional<std::uint16_t> parse_port(std::string_view text) {
    if (text.empty() || text.size() > 5 || (text.size() > 1 && text[0] == '0')) return std::nullopt;
    std::uint32_t value = 0;
    for (char c : text) {
        if (!is_digit(c)) return std::nullopt;
        value = value * 10 + static_cast<std::uint32_t>(c - '0');
    }
    if (value > 65535) return std::nullopt;
    return static_cast<std::uint16_t>(value);
}

// A v1 address by inet_pton rules (IPv4: exactly four decimal octets, no leading zero).
std::optional<net::address> parse_ip(std::string_view text, bool v6, std::uint16_t port) {
    const std::string copy(text);  // inet_pton wants a terminated string
    std::array<std::uint8_t, 16> bytes{};
    if (inet_pton(v6 ? AF_INET6 : AF_INET, copy.c_str(), bytes.data()) != 1) return std::nullopt;
    if (v6) return net::address::v6(bytes, port);
    return net::address::v4({bytes[0], bytes[1], bytes[2], bytes[3]}, port);
}

std::uint16_t read_u16(const std::uint8_t* p) { return static_cast<std::uint16_t>((p[0] << 8) | p[1]); }

void put_u16(std::vector<std::uint8_t>& out, std::size_t value) {
    out.push_back(static_cast<std::uint8_t>(value >> 8));
    out.push_back(static_cast<std::uint8_t>(value));
}

}  // namespace

std::uint32_t crc32c(std::span<const std::uint8_t> bytes) {
    crc32c_engine crc;
    crc.process_bytes(bytes.data(), bytes.size());
    return crc.checksum();
}

// ---- decoder ----

proxy_header_parser::result proxy_header_parser::feed(std::span<const std::uint8_t> bytes) {
    if (final_) return {final_->status, 0, final_->reason};
    std::size_t taken = 0;
    while (taken < bytes.size()) {
        // Take bytes up to the next point where something can be decided, never past it: the outcome and
        // `consumed` are then the same however the input is split.
        const std::size_t target = next_checkpoint();
        const std::size_t n = std::min(target - buffer_.size(), bytes.size() - taken);
        buffer_.insert(buffer_.end(), bytes.begin() + static_cast<std::ptrdiff_t>(taken),
                       bytes.begin() + static_cast<std::ptrdiff_t>(taken + n));
        taken += n;
        if (buffer_.size() < target) break;
        if (auto decided = check()) {
            final_ = *decided;
            return {decided->status, taken, decided->reason};
        }
    }
    return {parse_status::need_more, taken, proxy_protocol_error::malformed};
}

std::size_t proxy_header_parser::next_checkpoint() const {
    const std::size_t size = buffer_.size();
    if (kind_ != kind::v2 || size < v2_signature.size() + 2) return size + 1;  // byte by byte
    if (size < v2_fixed) return v2_fixed;                                     // the length field
    return v2_total_;
}

proxy_header_parser::result proxy_header_parser::refuse(proxy_protocol_error reason) {
    return {parse_status::invalid, 0, reason};
}

std::optional<proxy_header_parser::result> proxy_header_parser::check() {
    if (kind_ == kind::unknown) {
        // Decided on the first byte: only these two can start a PROXY header.
        if (buffer_[0] == v2_signature[0]) {
            kind_ = kind::v2;
        } else if (buffer_[0] == static_cast<std::uint8_t>(v1_signature[0])) {
            kind_ = kind::v1;
        } else {
            return refuse(proxy_protocol_error::malformed);
        }
    }
    return kind_ == kind::v1 ? check_v1() : check_v2();
}

// Runs after every byte of a v1 line: refuses as soon as the line can no longer become valid (signature,
// family token, characters, spacing, CR/LF, length), and parses it fully at its CRLF.
std::optional<proxy_header_parser::result> proxy_header_parser::check_v1() {
    const std::string_view line(reinterpret_cast<const char*>(buffer_.data()), buffer_.size());
    const std::size_t i = line.size() - 1;
    const char c = line[i];
    if (i < v1_signature.size()) {
        if (c != v1_signature[i]) return refuse(proxy_protocol_error::malformed);
        return std::nullopt;
    }
    if (c == '\n') {
        if (line[i - 1] != '\r') return refuse(proxy_protocol_error::malformed);
        return finish_v1();
    }
    if (line[i - 1] == '\r') return refuse(proxy_protocol_error::malformed);  // a CR not followed by LF
    if (line.size() >= max_v1_line) return refuse(proxy_protocol_error::malformed);  // no room left for CRLF

    const std::string_view rest = line.substr(v1_signature.size());
    const std::size_t token_end = rest.find_first_of(" \r");
    const std::string_view token = rest.substr(0, token_end);
    constexpr std::string_view families[] = {"TCP4", "TCP6", "UNKNOWN"};
    if (token_end == std::string_view::npos) {
        const bool prefix = std::any_of(std::begin(families), std::end(families),
                                        [&](std::string_view f) { return f.starts_with(token); });
        if (!prefix) return refuse(proxy_protocol_error::malformed);
        return std::nullopt;
    }
    if (std::find(std::begin(families), std::end(families), token) == std::end(families)) {
        return refuse(proxy_protocol_error::malformed);
    }
    if (token == "UNKNOWN") return std::nullopt;  // the receiver ignores whatever follows, up to the CRLF
    if (rest[token_end] != ' ') return refuse(proxy_protocol_error::malformed);  // "TCP4\r": no fields

    // "src dst sport dport" being typed after "TCPx ".
    const std::string_view fields = rest.substr(token_end + 1);
    const auto spaces = static_cast<std::size_t>(std::count(fields.begin(), fields.end(), ' '));
    const bool six = token == "TCP6";
    if (c == ' ' || c == '\r') {
        // A field ends: it must not be empty, and the CR comes after exactly four fields.
        if (line[i - 1] == ' ') return refuse(proxy_protocol_error::malformed);
        if (c == ' ' && spaces > 3) return refuse(proxy_protocol_error::malformed);
        if (c == '\r' && spaces != 3) return refuse(proxy_protocol_error::malformed);
        return std::nullopt;
    }
    const bool in_port = spaces >= 2;
    const bool ok = in_port ? is_digit(c) : (six ? (is_hex(c) || c == ':' || c == '.') : (is_digit(c) || c == '.'));
    if (!ok) return refuse(proxy_protocol_error::malformed);
    return std::nullopt;
}

proxy_header_parser::result proxy_header_parser::finish_v1() {
    const std::string_view line(reinterpret_cast<const char*>(buffer_.data()), buffer_.size() - 2);  // no CRLF
    const std::string_view rest = line.substr(v1_signature.size());
    header_ = proxy_header{};
    header_.version = 1;
    header_.command = proxy_command::proxy;
    if (rest == "UNKNOWN" || rest.starts_with("UNKNOWN ")) {
        header_.family = proxy_family::unspec;
        return {parse_status::done, 0, proxy_protocol_error::malformed};
    }
    std::vector<std::string_view> parts;
    std::size_t start = 0;
    while (true) {
        const std::size_t space = rest.find(' ', start);
        parts.push_back(rest.substr(start, space == std::string_view::npos ? std::string_view::npos : space - start));
        if (space == std::string_view::npos) break;
        start = space + 1;
    }
    if (parts.size() != 5) return refuse(proxy_protocol_error::malformed);
    const bool six = parts[0] == "TCP6";
    if (!six && parts[0] != "TCP4") return refuse(proxy_protocol_error::malformed);
    const auto source_port = parse_port(parts[3]);
    const auto destination_port = parse_port(parts[4]);
    if (!source_port || !destination_port) return refuse(proxy_protocol_error::malformed);
    auto source = parse_ip(parts[1], six, *source_port);
    auto destination = parse_ip(parts[2], six, *destination_port);
    if (!source || !destination) return refuse(proxy_protocol_error::malformed);
    header_.family = six ? proxy_family::tcp6 : proxy_family::tcp4;
    header_.source = source;
    header_.destination = destination;
    return {parse_status::done, 0, proxy_protocol_error::malformed};
}

// Runs at each byte of the signature, then at the version/command byte, the family byte, the length field
// (the size cap and the address block are decided there, before any of it is read) and the header's end.
std::optional<proxy_header_parser::result> proxy_header_parser::check_v2() {
    const std::size_t size = buffer_.size();
    if (size <= v2_signature.size()) {
        if (buffer_[size - 1] != v2_signature[size - 1]) return refuse(proxy_protocol_error::malformed);
        return std::nullopt;
    }
    const std::uint8_t version_command = buffer_[12];
    const bool proxy = (version_command & 0x0F) == 0x1;
    if (size == 13) {
        if ((version_command >> 4) != 0x2) return refuse(proxy_protocol_error::malformed);
        if ((version_command & 0x0F) > 0x1) return refuse(proxy_protocol_error::malformed);
        return std::nullopt;
    }
    const std::uint8_t family = buffer_[13];
    if (size == 14) {
        if (!v2_address_size(family)) return refuse(proxy_protocol_error::malformed);
        // A LOCAL header's addresses are discarded whatever their transport; a PROXY one for datagrams is not
        // something a TCP proxy can honour.
        if (proxy && (family & 0x0F) == 0x2) return refuse(proxy_protocol_error::unsupported);
        return std::nullopt;
    }
    if (size == v2_fixed) {
        const std::size_t length = read_u16(&buffer_[14]);
        v2_total_ = v2_fixed + length;
        if (v2_total_ > max_v2_header) return refuse(proxy_protocol_error::too_large);
        if (proxy && length < *v2_address_size(family)) return refuse(proxy_protocol_error::malformed);
        if (v2_total_ > size) return std::nullopt;
    }
    return finish_v2();
}

proxy_header_parser::result proxy_header_parser::finish_v2() {
    const std::uint8_t family = buffer_[13];
    header_ = proxy_header{};
    header_.version = 2;
    if ((buffer_[12] & 0x0F) == 0x0) {
        // LOCAL: the connection's own endpoints apply; the block is skipped, whatever it holds.
        header_.command = proxy_command::local;
        header_.family = proxy_family::unspec;
        return {parse_status::done, 0, proxy_protocol_error::malformed};
    }
    header_.command = proxy_command::proxy;
    const std::uint8_t* block = buffer_.data() + v2_fixed;
    switch (family) {
    case 0x11:
        header_.family = proxy_family::tcp4;
        header_.source = net::address::v4({block[0], block[1], block[2], block[3]}, read_u16(block + 8));
        header_.destination = net::address::v4({block[4], block[5], block[6], block[7]}, read_u16(block + 10));
        break;
    case 0x21: {
        header_.family = proxy_family::tcp6;
        std::array<std::uint8_t, 16> source{};
        std::array<std::uint8_t, 16> destination{};
        std::copy(block, block + 16, source.begin());
        std::copy(block + 16, block + 32, destination.begin());
        header_.source = net::address::v6(source, read_u16(block + 32));
        header_.destination = net::address::v6(destination, read_u16(block + 34));
        break;
    }
    case 0x31: header_.family = proxy_family::unix_stream; break;
    default: header_.family = proxy_family::unspec; break;
    }

    // TLVs fill the rest of the header exactly: each one's 3-byte head and value must fit.
    std::size_t offset = v2_fixed + *v2_address_size(family);
    std::optional<std::size_t> crc_at;
    while (offset < v2_total_) {
        if (v2_total_ - offset < 3) return refuse(proxy_protocol_error::malformed);
        const std::uint8_t type = buffer_[offset];
        const std::size_t length = read_u16(&buffer_[offset + 1]);
        const std::size_t value_at = offset + 3;
        if (length > v2_total_ - value_at) return refuse(proxy_protocol_error::malformed);
        const auto value = buffer_.begin() + static_cast<std::ptrdiff_t>(value_at);
        proxy_tlv tlv{type, std::vector<std::uint8_t>(value, value + static_cast<std::ptrdiff_t>(length))};
        // The TLVs spliced interprets may appear once each: two different answers would be ambiguous.
        if (type == pp2_type_authority) {
            if (header_.authority) return refuse(proxy_protocol_error::malformed);
            header_.authority = std::string(tlv.value.begin(), tlv.value.end());
        } else if (type == pp2_type_unique_id) {
            if (header_.unique_id || length > 128) return refuse(proxy_protocol_error::malformed);
            header_.unique_id = tlv.value;
        } else if (type == pp2_type_crc32c) {
            if (crc_at || length != 4) return refuse(proxy_protocol_error::malformed);
            crc_at = value_at;
        }
        header_.tlvs.push_back(std::move(tlv));
        offset = value_at + length;
    }

    if (crc_at) {
        // Over the whole header with the checksum's own four bytes read as zeros.
        const std::uint8_t* field = buffer_.data() + *crc_at;
        const std::uint32_t sent = (std::uint32_t{field[0]} << 24) | (std::uint32_t{field[1]} << 16) |
                                   (std::uint32_t{field[2]} << 8) | std::uint32_t{field[3]};
        crc32c_engine crc;
        const std::uint8_t zeros[4] = {};
        crc.process_bytes(buffer_.data(), *crc_at);
        crc.process_bytes(zeros, sizeof zeros);
        crc.process_bytes(buffer_.data() + *crc_at + 4, v2_total_ - *crc_at - 4);
        if (crc.checksum() != sent) return refuse(proxy_protocol_error::bad_crc);
        header_.crc32c_checked = true;
    }
    return {parse_status::done, 0, proxy_protocol_error::malformed};
}

// ---- encoders ----

std::vector<std::uint8_t> encode_v1(const net::address& source, const net::address& destination) {
    const bool six = source.is_v6() || destination.is_v6();
    const net::address src = six ? source.as_v6() : source;
    const net::address dst = six ? destination.as_v6() : destination;
    const std::string line = std::string(six ? "PROXY TCP6 " : "PROXY TCP4 ") + src.ip_text() + " " + dst.ip_text() +
                             " " + std::to_string(src.port()) + " " + std::to_string(dst.port()) + "\r\n";
    return {line.begin(), line.end()};
}

std::vector<std::uint8_t> encode_v2(const net::address& source, const net::address& destination,
                                    std::string_view authority, std::span<const std::uint8_t> unique_id) {
    if (unique_id.empty() || unique_id.size() > 128) return {};
    const bool six = source.is_v6() || destination.is_v6();
    const std::size_t address_size = six ? 36 : 12;
    const std::size_t length =
        address_size + (authority.empty() ? 0 : 3 + authority.size()) + 3 + unique_id.size();
    if (v2_fixed + length > max_v2_header) return {};

    std::vector<std::uint8_t> out(v2_signature.begin(), v2_signature.end());
    out.reserve(v2_fixed + length);
    out.push_back(0x21);                 // version 2, PROXY
    out.push_back(six ? 0x21 : 0x11);    // TCP over IPv6 / IPv4
    put_u16(out, length);
    const net::address src = six ? source.as_v6() : source;
    const net::address dst = six ? destination.as_v6() : destination;
    out.insert(out.end(), src.ip().begin(), src.ip().end());
    out.insert(out.end(), dst.ip().begin(), dst.ip().end());
    put_u16(out, src.port());
    put_u16(out, dst.port());
    if (!authority.empty()) {
        out.push_back(pp2_type_authority);
        put_u16(out, authority.size());
        out.insert(out.end(), authority.begin(), authority.end());
    }
    out.push_back(pp2_type_unique_id);
    put_u16(out, unique_id.size());
    out.insert(out.end(), unique_id.begin(), unique_id.end());
    return out;
}

}  // namespace spliced::proxy
