// What main.cpp and the test cases share: the run's settings and the end-of-run check of the shared daemon.
#pragma once

#include <string>

namespace it {

// Read from the environment by main before any test runs.
struct run_settings {
    std::string binary;    // SPLICED_BINARY
    std::string datapath;  // SPLICED_TEST_DATAPATH: sockmap | splice | copy | auto
};
run_settings& settings();

// If a test started the shared daemon: checks that no sockhash/peers entry is left (sockmap), stops it with
// SIGTERM and checks exit status 0. Prints what failed and returns false on any failure. With keep_files (or
// on a failure here) the temp directory with the config and the daemon's log is left in place.
bool finish_suite(bool keep_files);

// The tail of the shared daemon's log, or "" if none was started.
std::string daemon_log_tail();

}  // namespace it
