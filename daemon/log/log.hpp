// Logging setup: the spdlog daemon log on stderr, and the one-line-per-connection access log.
#pragma once

#include "config/config.hpp"

#include "net/asio.hpp"

#include <fmt/format.h>
#include <memory>
#include <spdlog/spdlog.h>

namespace spliced::log {

// Configures the default (stderr) logger's level and pattern.
void init(const config::log_config& cfg);

// The access logger, or nullptr when `access_log: off`. Throws when the file cannot be opened.
std::shared_ptr<spdlog::logger> make_access_log(const config::log_config& cfg);

}  // namespace spliced::log

// "1.2.3.4:80" / "[::1]:80" for endpoints in log lines.
template <>
struct fmt::formatter<boost::asio::ip::tcp::endpoint> : fmt::formatter<std::string> {
    template <typename Ctx>
    auto format(const boost::asio::ip::tcp::endpoint& ep, Ctx& ctx) const {
        auto a = ep.address();
        std::string s = a.is_v6() ? "[" + a.to_string() + "]:" + std::to_string(ep.port())
                                  : a.to_string() + ":" + std::to_string(ep.port());
        return fmt::formatter<std::string>::format(s, ctx);
    }
};
