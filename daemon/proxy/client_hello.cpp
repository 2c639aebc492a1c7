// An incremental TLS ClientHello reader for SNI routing: the server name and ALPN list, reassembled across TCP
// segments and TLS records, without consuming anything.
#include "proxy/client_hello.hpp"

#include <algorithm>

namespace spliced::proxy {

namespace {

constexpr std::uint8_t record_handshake = 22;
constexpr std::uint8_t handshake_client_hello = 1;
constexpr std::size_t max_record_payload = 16384;  // 2^14 (RFC 8446 5.1)
constexpr std::uint16_t extension_server_name = 0;
constexpr std::uint16_t extension_alpn = 16;

// Bounds-checked big-endian reads; a read past the end fails and leaves the reader failed.
class reader {
public:
    explicit reader(std::span<const std::uint8_t> data) : data_(data) {}
    std::size_t left() const { return data_.size() - pos_; }
    bool u8(std::size_t& out) { return number(1, out); }
    bool u16(std::size_t& out) { return number(2, out); }
    bool bytes(std::size_t n, std::span<const std::uint8_t>& out) {
        if (n > left()) return false;
        out = data_.subspan(pos_, n);
        pos_ += n;
        return true;
    }
    bool skip(std::size_t n) {
        std::span<const std::uint8_t> ignored;
        return bytes(n, ignored);
    }

private:
    bool number(std::size_t width, std::size_t& out) {
        if (width > left()) return false;
        out = 0;
        for (std::size_t i = 0; i < width; ++i) out = (out << 8) | data_[pos_ + i];
        pos_ += width;
        return true;
    }

    std::span<const std::uint8_t> data_;
    std::size_t pos_ = 0;
};

// A host_name as the route table compares it: lower-cased, without its trailing dot. Letters, digits, '-',
// '_' and '.' only (RFC 6066: an ASCII DNS name; '_' is seen in the wild), 1 to max_server_name bytes, no
// empty label.
std::optional<std::string> normalize_host_name(std::span<const std::uint8_t> raw) {
    if (raw.empty() || raw.size() > max_server_name) return std::nullopt;
    std::string name;
    name.reserve(raw.size());
    for (std::uint8_t b : raw) {
        const char c = static_cast<char>(b);
        if (c >= 'A' && c <= 'Z') {
            name.push_back(static_cast<char>(c - 'A' + 'a'));
        } else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.') {
            name.push_back(c);
        } else {
            return std::nullopt;
        }
    }
    if (name.back() == '.') name.pop_back();
    // No empty label: not "", ".a", "a..b" (nor "a.." with its one trailing dot gone).
    if (name.empty() || name.front() == '.' || name.back() == '.' || name.find("..") != std::string::npos) {
        return std::nullopt;
    }
    return name;
}

// server_name extension (RFC 6066 3): a non-empty ServerNameList filling the extension, at most one host_name.
bool read_server_name(std::span<const std::uint8_t> data, client_hello& hello) {
    reader r(data);
    std::size_t list_size = 0;
    if (!r.u16(list_size) || list_size != r.left() || list_size == 0) return false;
    while (r.left() > 0) {
        std::size_t type = 0;
        std::size_t size = 0;
        std::span<const std::uint8_t> name;
        if (!r.u8(type) || !r.u16(size) || !r.bytes(size, name)) return false;
        if (type != 0) continue;  // not host_name: skipped
        if (hello.server_name) return false;
        hello.server_name = normalize_host_name(name);
        if (!hello.server_name) return false;
    }
    return true;
}

// application_layer_protocol_negotiation (RFC 7301 3.1): a non-empty list of non-empty names filling it.
bool read_alpn(std::span<const std::uint8_t> data, client_hello& hello) {
    reader r(data);
    std::size_t list_size = 0;
    if (!r.u16(list_size) || list_size != r.left() || list_size == 0) return false;
    while (r.left() > 0) {
        std::size_t size = 0;
        std::span<const std::uint8_t> name;
        if (!r.u8(size) || size == 0 || !r.bytes(size, name)) return false;
        hello.alpn.emplace_back(name.begin(), name.end());
    }
    return true;
}

}  // namespace

client_hello_parser::result client_hello_parser::refuse(client_hello_error reason) {
    final_ = result{parse_status::invalid, reason};
    return *final_;
}

client_hello_parser::result client_hello_parser::feed(std::span<const std::uint8_t> bytes) {
    if (final_) return *final_;
    std::size_t pos = 0;
    while (pos < bytes.size()) {
        if (record_left_ == 0) {
            // A record header, checked byte by byte: a first record that is not a TLS handshake record is not
            // TLS at all; a later one that is not means a broken ClientHello.
            const std::uint8_t b = bytes[pos++];
            const std::size_t index = record_header_size_;
            record_header_[record_header_size_++] = b;
            const auto bad = first_record_ ? client_hello_error::not_tls : client_hello_error::malformed;
            if (index == 0 && b != record_handshake) return refuse(bad);
            if (index == 1 && b != 0x03) return refuse(bad);
            if (index == 2 && (b < 0x01 || b > 0x04)) return refuse(bad);  // 0x0301 .. 0x0304
            if (index == 4) {
                const std::size_t size = (std::size_t{record_header_[3]} << 8) | record_header_[4];
                // Empty handshake fragments are forbidden (RFC 8446 5.1), and so are oversized records.
                if (size == 0 || size > max_record_payload) return refuse(client_hello_error::malformed);
                record_left_ = size;
                record_header_size_ = 0;
                first_record_ = false;
            }
            continue;
        }
        // Payload: into the message, never past what the message still needs.
        const std::size_t wanted = message_size_ != 0 ? message_size_ - message_.size() : 4 - message_.size();
        const std::size_t n = std::min({record_left_, bytes.size() - pos, wanted});
        message_.insert(message_.end(), bytes.begin() + static_cast<std::ptrdiff_t>(pos),
                        bytes.begin() + static_cast<std::ptrdiff_t>(pos + n));
        pos += n;
        record_left_ -= n;
        if (message_size_ == 0) {
            if (message_[0] != handshake_client_hello) return refuse(client_hello_error::not_tls);
            if (message_.size() < 4) continue;
            message_size_ = 4 + ((std::size_t{message_[1]} << 16) | (std::size_t{message_[2]} << 8) | message_[3]);
            if (message_size_ > max_client_hello) return refuse(client_hello_error::too_large);
        }
        if (message_.size() == message_size_) return parse_message();
    }
    return {parse_status::need_more, client_hello_error::not_tls};
}

// The body (RFC 8446 4.1.2): every nested length must fit its parent, and the extensions fill the rest exactly.
client_hello_parser::result client_hello_parser::parse_message() {
    reader r(std::span<const std::uint8_t>(message_).subspan(4));
    client_hello hello;
    std::size_t version = 0;
    std::size_t size = 0;
    if (!r.u16(version) || (version >> 8) != 0x03) return refuse(client_hello_error::malformed);
    hello.legacy_version = static_cast<std::uint16_t>(version);
    if (!r.skip(32)) return refuse(client_hello_error::malformed);  // random
    if (!r.u8(size) || size > 32 || !r.skip(size)) return refuse(client_hello_error::malformed);  // session id
    if (!r.u16(size) || size < 2 || size % 2 != 0 || !r.skip(size)) {  // cipher suites
        return refuse(client_hello_error::malformed);
    }
    if (!r.u8(size) || size < 1 || !r.skip(size)) return refuse(client_hello_error::malformed);  // compression
    if (r.left() > 0) {
        std::span<const std::uint8_t> block;
        if (!r.u16(size) || size != r.left() || !r.bytes(size, block)) return refuse(client_hello_error::malformed);
        reader extensions(block);
        std::vector<std::uint16_t> seen;
        while (extensions.left() > 0) {
            std::size_t type = 0;
            std::span<const std::uint8_t> data;
            if (!extensions.u16(type) || !extensions.u16(size) || !extensions.bytes(size, data)) {
                return refuse(client_hello_error::malformed);
            }
            seen.push_back(static_cast<std::uint16_t>(type));
            if (type == extension_server_name && !read_server_name(data, hello)) {
                return refuse(client_hello_error::malformed);
            }
            if (type == extension_alpn && !read_alpn(data, hello)) return refuse(client_hello_error::malformed);
        }
        // No extension type twice (RFC 8446 4.2).
        std::sort(seen.begin(), seen.end());
        if (std::adjacent_find(seen.begin(), seen.end()) != seen.end()) return refuse(client_hello_error::malformed);
    }
    hello_ = std::move(hello);
    final_ = result{parse_status::done, client_hello_error::not_tls};
    return *final_;
}

}  // namespace spliced::proxy
