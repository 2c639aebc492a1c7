// A route's allow and deny lists: how they load, what they refuse, and the errors of a bad list.
#include "config/loader.hpp"
#include "proxy/source_acl.hpp"

#include <arpa/inet.h>
#include <catch2/catch.hpp>
#include <netinet/in.h>
#include <string>

using namespace spliced;

namespace {

config::route route_of(const std::string& lists) {
    return config::load_string("routes:\n  - name: r\n    listen: 127.0.0.1:8080\n" + lists +
                                   "    backends: [{address: 127.0.0.1:9000}]\n",
                               "t.yaml")
        .routes.at(0);
}

std::string error_of(const std::string& lists) {
    try {
        route_of(lists);
    } catch (const config::config_error& e) {
        return std::string(e.what()).substr(7);  // past "t.yaml:"
    }
    FAIL("accepted: " << lists);
    return {};
}

net::address ip(const char* text) {
    sockaddr_storage ss{};
    if (std::string(text).find(':') != std::string::npos) {
        auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(40000);
        REQUIRE(inet_pton(AF_INET6, text, &a->sin6_addr) == 1);
    } else {
        auto* a = reinterpret_cast<sockaddr_in*>(&ss);
        a->sin_family = AF_INET;
        a->sin_port = htons(40000);
        REQUIRE(inet_pton(AF_INET, text, &a->sin_addr) == 1);
    }
    return net::address::from(reinterpret_cast<sockaddr*>(&ss));
}

}  // namespace

TEST_CASE("no allow or deny list: every client, even one whose address is unknown") {
    const auto r = route_of("");
    CHECK(proxy::admits(r, ip("203.0.113.9")));
    CHECK(proxy::admits(r, ip("2001:db8::1")));
    CHECK(proxy::admits(r, net::address{}));
}

TEST_CASE("allow admits only its networks, IPv4 (also mapped into IPv6) and IPv6") {
    const auto r = route_of("    allow: [\"10.0.0.0/8\", \"2001:db8::/32\", \"192.0.2.7\"]\n");
    CHECK(proxy::admits(r, ip("10.1.2.3")));
    CHECK(proxy::admits(r, ip("::ffff:10.1.2.3")));  // an IPv4 client on a dual-stack listener
    CHECK(proxy::admits(r, ip("2001:db8:5::1")));
    CHECK(proxy::admits(r, ip("192.0.2.7")));
    CHECK_FALSE(proxy::admits(r, ip("192.0.2.8")));
    CHECK_FALSE(proxy::admits(r, ip("11.0.0.1")));
    CHECK_FALSE(proxy::admits(r, ip("2001:db9::1")));
    CHECK_FALSE(proxy::admits(r, net::address{}));  // nothing to judge: refused
}

TEST_CASE("deny refuses its networks and wins over allow") {
    const auto only_deny = route_of("    deny: [\"127.0.0.2/32\", \"fd00::/8\"]\n");
    CHECK_FALSE(proxy::admits(only_deny, ip("127.0.0.2")));
    CHECK_FALSE(proxy::admits(only_deny, ip("::ffff:127.0.0.2")));
    CHECK_FALSE(proxy::admits(only_deny, ip("fd12::1")));
    CHECK(proxy::admits(only_deny, ip("127.0.0.1")));
    CHECK(proxy::admits(only_deny, ip("::1")));
    const auto both = route_of("    allow: [\"10.0.0.0/8\"]\n    deny: [\"10.1.0.0/16\"]\n");
    CHECK(proxy::admits(both, ip("10.2.0.1")));
    CHECK_FALSE(proxy::admits(both, ip("10.1.0.1")));
    CHECK_FALSE(proxy::admits(both, ip("172.16.0.1")));
}

TEST_CASE("a bad allow or deny list is refused at its position") {
    CHECK(error_of("    allow: 10.0.0.0/8\n") == "4:12: allow must be a list, not a single value");
    CHECK(error_of("    allow: []\n") == "4:12: allow is an empty list (leave it out to allow every source)");
    CHECK(error_of("    deny: []\n") == "4:11: deny is an empty list (leave it out to deny no source)");
    CHECK(error_of("    deny: [\"10.0.0.1/8\"]\n") ==
          "4:12: deny: bad network '10.0.0.1/8': address has bits set past the /8 prefix; expected e.g. 10.0.0.0/8");
    CHECK(error_of("    allow: [\"10.0.0.0/8\", \"bogus\"]\n").rfind("4:27: allow: bad network 'bogus': ", 0) == 0);
}
