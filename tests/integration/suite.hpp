// What a black-box suite's runner (runner.cpp) and its cases share: the run's settings and the suite's hooks.
#pragma once

#include <string>

namespace it {

// Read from the environment by run_suite() before any test runs.
struct run_settings {
    std::string binary;    // SPLICED_BINARY
    std::string datapath;  // SPLICED_TEST_DATAPATH: sockmap | splice | copy | auto
};
run_settings& settings();

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
