// The idle clock and the access log's path list: pure parts of the data paths.
#include "datapath/datapath.hpp"

#include <catch2/catch.hpp>

using namespace spliced::datapath;
using namespace std::chrono_literals;

TEST_CASE("the idle clock measures time since the byte counters last moved, and starts at its first sample") {
    progress_clock c;
    const auto t0 = std::chrono::steady_clock::time_point{} + 1000h;
    CHECK(c.quiet(500, t0) == 0s);
    CHECK(c.quiet(500, t0 + 3s) == 3s);
    CHECK(c.quiet(501, t0 + 4s) == 0s);  // one byte received or acknowledged anywhere is progress
    CHECK(c.quiet(501, t0 + 9s) == 5s);
}

TEST_CASE("an idle timeout longer than 49.7 days (TCP_INFO's 32-bit milliseconds) still expires") {
    progress_clock c;
    const auto t0 = std::chrono::steady_clock::time_point{} + 1h;
    const auto idle = std::chrono::milliseconds(60LL * 24 * 3600 * 1000);  // 60 days
    c.quiet(42, t0);
    CHECK(c.quiet(42, t0 + 59 * 24h) < idle);
    CHECK(c.quiet(42, t0 + 60 * 24h) >= idle);
}

TEST_CASE("the path list names every data path a connection used, in order, once each time it moved") {
    path_log log;
    CHECK(log.text() == "-");
    log.ran_on(kind::splice);
    log.ran_on(kind::splice);
    CHECK(log.text() == "splice");
    log.ran_on(kind::sockmap);
    CHECK(log.text() == "splice+sockmap");
    log.ran_on(kind::copy);
    log.ran_on(kind::copy);  // the second direction demoted too
    CHECK(log.text() == "splice+sockmap+copy");
    CHECK(log.first() == kind::splice);
}
