// What a black-box suite's runner (runner.cpp) and its cases share: the run's settings and the suite's hooks.
#pragma once

#include <cstddef>
#include <string>

namespace it {

constexpr std::size_t KiB = 1024;
constexpr std::size_t MiB = 1024 * KiB;

// Read from the environment by run_suite() before any test runs.
struct run_settings {
    std::string binary;    // SPLICED_BINARY
    std::string datapath;  // SPLICED_TEST_DATAPATH: sockmap | splice | copy | auto
};
run_settings& settings();

// The data path under test, and what follows from it.
inline const std::string& datapath() { return settings().datapath; }
// The daemon holds the BPF maps: sockmap, and auto (the suites run as root, where sockmap is usable).
inline bool uses_maps() { return datapath() == "sockmap" || datapath() == "auto"; }
// The path connections are handed to first: auto starts every connection on splice (and moves the ones that
// go idle to sockmap later, counted in spliced_sockmap_promotions_total).
inline std::string handoff_path() { return datapath() == "auto" ? "splice" : datapath(); }

// The current case's name and data path, on stdout and in every failure message of the case.
#define ANNOUNCE_DATAPATH()                                                                                    \
    INFO("data path under test: " << it::datapath());                                                          \
    std::cout << "[" << it::datapath() << "] " << Catch::getResultCapture().getCurrentTestName() << std::endl

// A suite's main: checks the settings (exit 2 if unusable), skips (77) without root on sockmap/auto, raises
// RLIMIT_NOFILE to its hard limit, runs the cases; 0 only if every case passed and after_suite() is content.
// `what` names the suite in messages ("integration tests").
int run_suite(int argc, char* argv[], const std::string& what);

// Defined by each suite. After every case (e.g. shows the daemon's log when it failed) ...
void after_case(const std::string& case_name, bool failed);
// ... and after the last one (e.g. stops a shared daemon and checks its clean exit); false on a failure there.
bool after_suite(bool any_case_failed);

// Prints the tail of a daemon's log under a header naming the failed case (nothing if `tail` is empty).
void print_log_tail(const std::string& case_name, const std::string& tail);

}  // namespace it
