// SHA-256 (FIPS 180-4), incremental, for checking payload integrity end to end.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace it {

using digest = std::array<std::uint8_t, 32>;

class sha256 {
public:
    sha256();
    void update(const void* data, std::size_t len);
    void update(std::string_view s) { update(s.data(), s.size()); }
    // Finishes the hash; the object must not be updated afterwards.
    digest finish();

    static digest of(const void* data, std::size_t len);
    static digest of(std::string_view s) { return of(s.data(), s.size()); }

private:
    void block(const std::uint8_t* p);

    std::array<std::uint32_t, 8> h_;
    std::array<std::uint8_t, 64> buf_{};
    std::size_t buf_len_ = 0;
    std::uint64_t total_ = 0;
};

std::string hex(const digest& d);

}  // namespace it
