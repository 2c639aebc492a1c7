// Round-robin order and the kernel-floor rule.
#include "datapath/probe.hpp"
#include "proxy/balancer.hpp"

#include <catch2/catch.hpp>



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
