// Round-robin order and the kernel-floor rule.
#include "datapath/probe.hpp"
#include "proxy/balancer.hpp"

#include <catch2/catch.hpp>

using spliced::proxy::round_robin;

TEST_CASE("round robin starts each connection one backend further and wraps around") {
    round_robin rr(3);
    CHECK(rr.first() == 0);
    CHECK(rr.first() == 1);
    CHECK(rr.first() == 2);
    CHECK(rr.first() == 0);
}

TEST_CASE("after a failure the next backend is tried, wrapping at the end of the list") {
    round_robin rr(3);
    CHECK(rr.after(0) == 1);
    CHECK(rr.after(2) == 0);
    round_robin single(1);
    CHECK(single.after(0) == 0);
}

TEST_CASE("the sockmap kernel floor is 6.16, or 6.12.34 on the 6.12 series") {
    using spliced::datapath::kernel_meets_floor;
    using spliced::datapath::kernel_version;
    CHECK(kernel_meets_floor(kernel_version{6, 18, 44, ""}));
    CHECK(kernel_meets_floor(kernel_version{6, 16, 0, ""}));
    CHECK(kernel_meets_floor(kernel_version{7, 0, 0, ""}));
    CHECK(kernel_meets_floor(kernel_version{6, 12, 34, ""}));
    CHECK_FALSE(kernel_meets_floor(kernel_version{6, 12, 33, ""}));
    CHECK_FALSE(kernel_meets_floor(kernel_version{6, 15, 9, ""}));
    CHECK_FALSE(kernel_meets_floor(kernel_version{6, 1, 100, ""}));
    CHECK_FALSE(kernel_meets_floor(kernel_version{5, 15, 0, ""}));
}
