// Command line: run, --check-config, --features, --version.
#include "app/app.hpp"
#include "config/loader.hpp"
#include "datapath/probe.hpp"
#include "datapath/pipe_pool.hpp"
#include "log/log.hpp"
#include "net/resolve.hpp"

#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>

namespace {

constexpr const char* usage =
    "usage: spliced --config FILE            run the proxy\n"
    "       spliced --check-config --config FILE\n"
    "                                        validate the config and exit\n"
    "       spliced --features               report which data paths this kernel supports\n"
    "       spliced --version\n";

int features() {
    using namespace spliced::datapath;
    probe_report report;
    auto engine = probe_sockmap(report);
    auto kernel = running_kernel();
    std::printf("spliced %s on Linux %s\n", SPLICED_VERSION, kernel.release.c_str());
    std::printf("sockmap: %s\n", report.usable ? "usable" : (report.loaded ? "loads, not chosen by auto" : "unavailable"));
    for (const auto& c : report.checks)
        std::printf("  %-44s %s  %s\n", c.name.c_str(), c.ok ? "ok  " : "FAIL", c.detail.c_str());
    std::printf("  => %s\n", report.summary.c_str());
    bool splice_ok = splice_available();
    std::printf("splice: %s\n", splice_ok ? "usable" : "unavailable");
    std::printf("copy: usable\n");
    std::printf("datapath auto chooses: %s\n", report.usable ? "sockmap" : (splice_ok ? "splice" : "copy"));
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    // A write to a socket whose peer is gone (splice(2) has no MSG_NOSIGNAL) must be an EPIPE for that
    // connection, never the death of the process.
    std::signal(SIGPIPE, SIG_IGN);
    // A SIGHUP (reload) that comes while the daemon starts up, before its signal handling exists,
    // must not end it; from READY=1 on, the app's signal set takes it.
    std::signal(SIGHUP, SIG_IGN);
    std::string config_path;
    bool check_only = false;
    for (int i = 1; i < argc; ++i) {
        std::string arg = argv[i];
        if (arg == "--config" && i + 1 < argc) {
            config_path = argv[++i];
        } else if (arg.rfind("--config=", 0) == 0) {
            config_path = arg.substr(9);
        } else if (arg == "--check-config") {
            check_only = true;
        } else if (arg == "--features") {
            return features();
        } else if (arg == "--version") {
            std::printf("spliced %s\n", SPLICED_VERSION);
            return 0;
        } else if (arg == "--help" || arg == "-h") {
            std::fputs(usage, stdout);
            return 0;
        } else {
            std::fprintf(stderr, "spliced: unknown argument '%s'\n%s", arg.c_str(), usage);
            return 2;
        }
    }
    if (config_path.empty()) {
        std::fprintf(stderr, "spliced: --config FILE is required\n%s", usage);
        return 2;
    }
    spliced::config::config cfg;
    try {
        cfg = spliced::config::load_file(config_path, spliced::net::resolve_host);
    } catch (const spliced::config::config_error& e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 1;
    }
    if (check_only) {
        std::printf("%s: ok (%zu route(s))\n", config_path.c_str(), cfg.routes.size());
        return 0;
    }
    try {
        spliced::log::init(cfg.log);
        spdlog::info("spliced {} starting: config {}", SPLICED_VERSION, config_path);
        spliced::app::daemon daemon(std::move(cfg));
        return daemon.run();
    } catch (const std::exception& e) {
        spdlog::critical("{}", e.what());
        std::fprintf(stderr, "spliced: %s\n", e.what());
        return 1;
    }
}
