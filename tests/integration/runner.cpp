// What every black-box suite's main does: reads the run's settings, skips (77) without the root the BPF paths
// need, raises the descriptor limit, runs the cases, and calls the suite's hooks after each case and at the end.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "suite.hpp"

#include <csignal>
#include <cstdlib>
#include <iostream>
#include <sys/resource.h>
#include <unistd.h>

namespace it {
run_settings& settings() {
    static run_settings s;
    return s;
}

void print_log_tail(const std::string& case_name, const std::string& tail) {
    if (tail.empty()) return;
    std::cerr << "---- spliced log (tail) after failed case \"" << case_name << "\" ----\n"
              << tail << "---- end of spliced log ----\n";
}
}  // namespace it

namespace {

struct after_each_case : Catch::TestEventListenerBase {
    using TestEventListenerBase::TestEventListenerBase;
    void testCaseEnded(const Catch::TestCaseStats& stats) override {
        it::after_case(stats.testInfo.name, !stats.totals.assertions.allOk());
    }
};

}  // namespace

CATCH_REGISTER_LISTENER(after_each_case)

namespace it {

int run_suite(int argc, char* argv[], const std::string& what) {
    const char* binary = std::getenv("SPLICED_BINARY");
    const char* datapath = std::getenv("SPLICED_TEST_DATAPATH");
    if (!binary || !*binary || !datapath || !*datapath) {
        std::cerr << what << " need SPLICED_BINARY=/path/to/spliced and "
                  << "SPLICED_TEST_DATAPATH=sockmap|splice|copy|auto in the environment\n";
        return 2;
    }
    std::string path = datapath;
    if (path != "sockmap" && path != "splice" && path != "copy" && path != "auto") {
        std::cerr << "SPLICED_TEST_DATAPATH must be sockmap, splice, copy or auto, not '" << path << "'\n";
        return 2;
    }
    if (access(binary, X_OK) != 0) {
        std::cerr << "SPLICED_BINARY=" << binary << " is not an executable file\n";
        return 2;
    }
    settings() = {binary, path};
    std::cout << what << " on data path: " << path << " (binary " << binary << ")" << std::endl;

    // splice and copy need no privilege (lowering a child's limits and reading its /proc files is allowed for
    // its owner); sockmap and auto load BPF programs and read the daemon's maps.
    if ((path == "sockmap" || path == "auto") && geteuid() != 0) {
        std::cout << "\n**********************************************************************\n"
                     "SKIPPED: sockmap and auto tests need root (CAP_BPF+CAP_NET_ADMIN)\n"
                     "**********************************************************************\n"
                  << std::endl;
        return 77;
    }

    std::signal(SIGPIPE, SIG_IGN);
    // Hundreds to thousands of client and backend descriptors here; daemons started by a case inherit the
    // limit unless the case sets their own.
    rlimit nofile{};
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
        nofile.rlim_cur = nofile.rlim_max;
        setrlimit(RLIMIT_NOFILE, &nofile);
    }

    const int failed = Catch::Session().run(argc, argv);
    const bool clean_end = after_suite(failed != 0);
    return failed || !clean_end ? 1 : 0;
}

}  // namespace it
