// SNI route matching: pattern validation, duplicates, exact over wildcard, longest wildcard first.
#include "config/sni.hpp"
#include "proxy/sni_match.hpp"

#include <catch2/catch.hpp>

using spliced::config::normalize_sni;
using spliced::proxy::sni_table;
using spliced::config::validate_sni_pattern;

TEST_CASE("patterns a config may hold: LDH host names, optionally behind a leading *.") {
    for (const char* ok : {"example.com", "www.example.com", "*.example.com", "*.com", "localhost", "a", "xn--caf-dma.example",
                           "a-b.c-d.example", "123.example", "WWW.Example.COM", "www.example.com.", "*.example.com."}) {
        INFO(ok);
        CHECK_FALSE(validate_sni_pattern(ok));
    }
    const std::string label63(63, 'a');
    CHECK_FALSE(validate_sni_pattern(label63 + ".example"));
    CHECK(validate_sni_pattern(std::string(64, 'a') + ".example"));
    const std::string name253 = label63 + "." + label63 + "." + label63 + "." + std::string(61, 'b');
    CHECK_FALSE(validate_sni_pattern(name253));
    CHECK_FALSE(validate_sni_pattern("*." + name253));  // the wildcard stands in front of a valid name
    CHECK(validate_sni_pattern(name253 + "b"));

    for (const char* bad : {"", ".", "*", "*.", "**.example.com", "*example.com", "a.*.example.com", "www.*",
                            "*.*.example.com", "w*w.example.com", ".example.com", "example..com", "-a.example",
                            "a-.example", "a_b.example", "a b.example", "exa/mple", "example.com..", "*..example.com",
                            "caf\xC3\xA9.example"}) {
        INFO(bad);
        const auto error = validate_sni_pattern(bad);
        REQUIRE(error);
        CHECK(error->find("SNI pattern \"" + std::string(bad) + "\"") == 0);
    }
}

TEST_CASE("names compare lower-cased and without a trailing dot") {
    CHECK(normalize_sni("WWW.Example.COM.") == "www.example.com");
    CHECK(normalize_sni("a") == "a");
    CHECK(normalize_sni("") == "");
    sni_table table;
    REQUIRE_FALSE(table.add("WWW.example.com", 1));
    REQUIRE_FALSE(table.add("*.Example.ORG.", 2));
    CHECK(table.match("www.example.com") == 1u);
    CHECK(table.match("WWW.EXAMPLE.COM") == 1u);
    CHECK(table.match("www.example.com.") == 1u);
    CHECK(table.match("a.example.org") == 2u);
    CHECK(table.match("A.EXAMPLE.ORG.") == 2u);
}

TEST_CASE("a wildcard matches one or more labels in front of its suffix, never the suffix itself") {
    sni_table table;
    REQUIRE_FALSE(table.add("*.example.com", 7));
    CHECK(table.match("a.example.com") == 7u);
    CHECK(table.match("a.b.example.com") == 7u);
    CHECK(table.match("x.y.z.example.com") == 7u);
    CHECK_FALSE(table.match("example.com"));
    CHECK_FALSE(table.match(".example.com"));
    CHECK_FALSE(table.match("aexample.com"));
    CHECK_FALSE(table.match("a.example.com.evil"));
    CHECK_FALSE(table.match("a.example.co"));
    CHECK_FALSE(table.match("com"));
    CHECK_FALSE(table.match(""));
    CHECK_FALSE(table.match("."));
}

TEST_CASE("an exact name wins over any wildcard, a longer wildcard over a shorter one") {
    sni_table table;
    REQUIRE_FALSE(table.add("*.com", 0));
    REQUIRE_FALSE(table.add("*.example.com", 1));
    REQUIRE_FALSE(table.add("*.b.example.com", 2));
    REQUIRE_FALSE(table.add("a.b.example.com", 3));
    REQUIRE_FALSE(table.add("example.com", 4));
    CHECK(table.size() == 5);
    CHECK(table.match("a.b.example.com") == 3u);  // exact
    CHECK(table.match("c.b.example.com") == 2u);  // longest wildcard
    CHECK(table.match("x.a.b.example.com") == 2u);
    CHECK(table.match("b.example.com") == 1u);    // "*.b.example.com" does not take "b.example.com"
    CHECK(table.match("c.example.com") == 1u);
    CHECK(table.match("example.com") == 4u);
    CHECK(table.match("other.com") == 0u);
    CHECK(table.match("a.other.com") == 0u);
    CHECK_FALSE(table.match("example.org"));
    // Insertion order does not matter.
    sni_table reversed;
    REQUIRE_FALSE(reversed.add("a.b.example.com", 3));
    REQUIRE_FALSE(reversed.add("*.b.example.com", 2));
    REQUIRE_FALSE(reversed.add("*.example.com", 1));
    REQUIRE_FALSE(reversed.add("*.com", 0));
    CHECK(reversed.match("a.b.example.com") == 3u);
    CHECK(reversed.match("c.b.example.com") == 2u);
    CHECK(reversed.match("c.example.com") == 1u);
}

TEST_CASE("a pattern listed twice is refused with its name, even written differently; the table is unchanged") {
    sni_table table;
    REQUIRE_FALSE(table.add("www.example.com", 0));
    REQUIRE_FALSE(table.add("*.example.com", 0));
    const auto twice = table.add("WWW.example.com.", 1);
    REQUIRE(twice);
    CHECK(twice->find("WWW.example.com.") != std::string::npos);
    CHECK(twice->find("twice") != std::string::npos);
    const auto wildcard_twice = table.add("*.EXAMPLE.com", 2);
    REQUIRE(wildcard_twice);
    CHECK(wildcard_twice->find("*.EXAMPLE.com") != std::string::npos);
    CHECK(table.size() == 2);
    CHECK(table.match("www.example.com") == 0u);
    CHECK(table.match("a.example.com") == 0u);
    // "*.example.com" and "a.example.com" may coexist, and so may "example.com".
    REQUIRE_FALSE(table.add("a.example.com", 3));
    REQUIRE_FALSE(table.add("example.com", 4));
    CHECK(table.match("a.example.com") == 3u);
}

TEST_CASE("an invalid pattern is refused by the table with the validator's message") {
    sni_table table;
    const auto error = table.add("a.*.example.com", 0);
    REQUIRE(error);
    CHECK(*error == *validate_sni_pattern("a.*.example.com"));
    CHECK(table.size() == 0);
    CHECK_FALSE(table.match("a.x.example.com"));
}
