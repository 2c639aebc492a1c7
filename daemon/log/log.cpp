// Logging setup: the spdlog daemon log on stderr, and the one-line-per-connection access log.
#include "log/log.hpp"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/stdout_sinks.h>

namespace spliced::log {

void init(const config::log_config& cfg) {
    using config::log_level;
    static const spdlog::level::level_enum levels[] = {spdlog::level::trace, spdlog::level::debug,
                                                       spdlog::level::info,  spdlog::level::warn,
                                                       spdlog::level::err,   spdlog::level::critical};
    if (!spdlog::get("spliced")) {
        auto logger = spdlog::stderr_color_mt("spliced");
        logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e [%^%l%$] %v");
        spdlog::set_default_logger(logger);
    }
    spdlog::set_level(levels[static_cast<int>(cfg.level)]);
    spdlog::flush_on(spdlog::level::info);
}

std::shared_ptr<spdlog::logger> make_access_log(const config::log_config& cfg) {
    std::shared_ptr<spdlog::logger> logger;
    if (cfg.access_log == "off") return nullptr;
    if (cfg.access_log == "stdout")
        logger = std::make_shared<spdlog::logger>("access", std::make_shared<spdlog::sinks::stdout_sink_mt>());
    else
        logger = std::make_shared<spdlog::logger>(
            "access", std::make_shared<spdlog::sinks::basic_file_sink_mt>(cfg.access_log));
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %v");
    logger->set_level(spdlog::level::info);
    logger->flush_on(spdlog::level::info);
    return logger;
}

bool once_per::allow(std::uint64_t& held_back) {
    const auto now = std::chrono::steady_clock::now().time_since_epoch().count();
    auto next = next_.load(std::memory_order_relaxed);
    if (now >= next && next_.compare_exchange_strong(next, now + period_.count(), std::memory_order_relaxed)) {
        held_back = held_back_.exchange(0, std::memory_order_relaxed);
        return true;
    }
    held_back_.fetch_add(1, std::memory_order_relaxed);
    return false;
}

bool lines_per_second::allow(std::uint64_t& held_back) {
    const auto now =
        std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
    auto second = second_.load(std::memory_order_relaxed);
    if (now != second && second_.compare_exchange_strong(second, now, std::memory_order_relaxed))
        used_.store(0, std::memory_order_relaxed);
    if (used_.fetch_add(1, std::memory_order_relaxed) < lines_) {
        held_back = held_back_.exchange(0, std::memory_order_relaxed);
        return true;
    }
    held_back_.fetch_add(1, std::memory_order_relaxed);
    return false;
}

}  // namespace spliced::log
