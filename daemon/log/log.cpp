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

}  // namespace spliced::log
