// Config loader: every key parsed, every refusal positioned at file:line:col.
#include "config/loader.hpp"

#include <catch2/catch.hpp>
#include <string>

using namespace spliced::config;

namespace {

// Loads `yaml` expecting a refusal; returns "line:col: message".
std::string error_of(const std::string& yaml) {
    try {
        load_string(yaml, "t.yaml");
    } catch (const config_error& e) {
        std::string w = e.what();
        REQUIRE(w.rfind("t.yaml:", 0) == 0);
        return w.substr(7);
    }
    FAIL("config was accepted:\n" << yaml);
    return {};
}

const std::string minimal_route = "routes:\n"
                                  "  - name: r\n"
                                  "    listen: 127.0.0.1:8080\n"
                                  "    backends:\n"
                                  "      - address: 127.0.0.1:9000\n";

}  // namespace

TEST_CASE("a config using every supported key parses to the values it states") {
    auto c = load_string("datapath: splice\n"
                         "workers: 3\n"
                         "drain_timeout: 1m30s\n"
                         "metrics:\n"
                         "  listen: 127.0.0.1:9090\n"
                         "log:\n"
                         "  level: debug\n"
                         "  access_log: /var/log/spliced/access.log\n"
                         "routes:\n"
                         "  - name: web\n"
                         "    listen: [\"0.0.0.0:8443\", \"[::]:8443\"]\n"
                         "    datapath: sockmap\n"
                         "    balance: round_robin\n"
                         "    timeouts: { connect: 250ms, idle: 1h }\n"
                         "    backends:\n"
                         "      - address: 127.0.0.1:9000\n"
                         "      - address: \"[::1]:9001\"\n"
                         "  - name: other\n"
                         "    listen: 127.0.0.1:7000\n"
                         "    backends: [{ address: 10.0.0.1:80 }]\n",
                         "full.yaml");
    CHECK(c.source == "full.yaml");
    CHECK(c.datapath == datapath_kind::splice);
    CHECK(c.workers == 3);
    CHECK(c.drain_timeout == std::chrono::seconds(90));
    CHECK(c.metrics.enabled);
    CHECK(c.metrics.listen.text == "127.0.0.1:9090");
    CHECK(c.log.level == log_level::debug);
    CHECK(c.log.access_log == "/var/log/spliced/access.log");
    REQUIRE(c.routes.size() == 2);
    const auto& web = c.routes[0];
    CHECK(web.name == "web");
    REQUIRE(web.listen.size() == 2);
    CHECK(web.listen[0].text == "0.0.0.0:8443");
    CHECK(web.listen[1].text == "[::]:8443");
    CHECK(web.listen[1].family() == AF_INET6);
    CHECK(web.datapath == datapath_kind::sockmap);
    CHECK(web.datapath_set);
    CHECK(web.timeouts.connect == std::chrono::milliseconds(250));
    CHECK(web.timeouts.idle == std::chrono::hours(1));
    REQUIRE(web.backends.size() == 2);
    CHECK(web.backends[1].addr.text == "[::1]:9001");
    // A route without datapath inherits the top-level one.
    CHECK(c.routes[1].datapath == datapath_kind::splice);
    CHECK_FALSE(c.routes[1].datapath_set);
}

TEST_CASE("defaults apply when optional keys are left out") {
    auto c = load_string(minimal_route, "m.yaml");
    CHECK(c.datapath == datapath_kind::auto_select);
    CHECK(c.workers == 0);
    CHECK(c.drain_timeout == std::chrono::seconds(30));
    CHECK_FALSE(c.metrics.enabled);
    CHECK(c.log.level == log_level::info);
    CHECK(c.log.access_log == "stdout");
    CHECK(c.routes[0].timeouts.connect == std::chrono::seconds(2));
    CHECK(c.routes[0].timeouts.idle == std::chrono::hours(1));
}

TEST_CASE("unknown keys are refused at the key's position, at every level") {
    CHECK(error_of("datapth: auto\n" + minimal_route).rfind("1:1: unknown key 'datapth'", 0) == 0);
    CHECK(error_of("routes:\n  - name: r\n    lisen: 127.0.0.1:1\n").rfind("3:5: unknown key 'lisen' in route", 0) == 0);
    CHECK(error_of("routes:\n  - name: r\n    listen: 127.0.0.1:1\n    backends:\n      - address: 127.0.0.1:2\n"
                   "        port: 3\n")
              .rfind("6:9: unknown key 'port' in backend", 0) == 0);
    CHECK(error_of("log:\n  colour: true\n" + minimal_route).rfind("2:3: unknown key 'colour' in log", 0) == 0);
    CHECK(error_of(minimal_route + "    timeouts: { connect: 1s, read: 2s }\n").rfind("6:30: unknown key 'read'", 0) == 0);
}

TEST_CASE("keys of the design that are not implemented yet are refused as such, not ignored") {
    for (auto key : {"max_connections: 10", "send_proxy_protocol: v2", "accept_proxy_protocol: true",
                     "health_check: { interval: 5s }"}) {
        auto e = error_of(minimal_route + "    " + key + "\n");
        CHECK(e.rfind("6:5: '", 0) == 0);
        CHECK(e.find("is not supported yet") != std::string::npos);
    }
    CHECK(error_of(minimal_route + "        weight: 2\n") == "6:9: 'weight' is not supported yet");
    CHECK(error_of(minimal_route + "    balance: least_conn\n").rfind("6:14: balance 'least_conn' is not supported yet", 0) == 0);
    CHECK(error_of(minimal_route + "    balance: fastest\n").rfind("6:14: unknown balance 'fastest'", 0) == 0);
}

TEST_CASE("YAML syntax errors carry the parser's position") {
    auto e = error_of("routes:\n  - name: [unclosed\n");
    CHECK(e.find("YAML syntax error") != std::string::npos);
    CHECK(e.rfind("3:", 0) == 0);
}

TEST_CASE("bad addresses are refused at the value: hostnames, missing or out-of-range ports") {
    auto listen_error = [](const std::string& value) {
        return error_of("routes:\n  - name: r\n    listen: " + value + "\n    backends: [{address: 127.0.0.1:9}]\n");
    };
    CHECK(listen_error("localhost:80").rfind("3:13: listen: bad address 'localhost:80'", 0) == 0);
    CHECK(listen_error("127.0.0.1:0").rfind("3:13: listen: bad address", 0) == 0);
    CHECK(listen_error("127.0.0.1:70000").rfind("3:13: listen: bad address", 0) == 0);
    CHECK(listen_error("127.0.0.1").rfind("3:13: listen: bad address", 0) == 0);
    CHECK(listen_error("\"[::1\"").rfind("3:13: listen: bad address", 0) == 0);
    CHECK(listen_error("[]").rfind("3:13: route 'r': listen is an empty list", 0) == 0);
    CHECK(error_of("routes:\n  - name: r\n    listen: 127.0.0.1:1\n    backends:\n      - address: 300.1.1.1:80\n")
              .rfind("5:18: backend address: bad address '300.1.1.1:80'", 0) == 0);
}

TEST_CASE("an empty or missing backend list is refused") {
    CHECK(error_of("routes:\n  - name: r\n    listen: 127.0.0.1:1\n    backends: []\n") ==
          "4:15: route 'r' has an empty backend list");
    CHECK(error_of("routes:\n  - name: r\n    listen: 127.0.0.1:1\n") == "2:5: route 'r' needs 'backends'");
    CHECK(error_of("routes:\n  - name: r\n    listen: 127.0.0.1:1\n    backends:\n      - {}\n").rfind("5:9:", 0) == 0);
}

TEST_CASE("unknown enum values are refused with the valid ones listed") {
    CHECK(error_of("datapath: ebpf\n" + minimal_route).rfind("1:11: unknown datapath 'ebpf' (expected auto", 0) == 0);
    CHECK(error_of(minimal_route + "    datapath: fast\n").rfind("6:15: unknown datapath 'fast'", 0) == 0);
    CHECK(error_of("log: { level: verbose }\n" + minimal_route).rfind("1:15: unknown log level 'verbose'", 0) == 0);
}

TEST_CASE("bad durations are refused: no unit, unknown unit, negative, empty, zero where it makes no sense") {
    CHECK(error_of("drain_timeout: 5\n" + minimal_route) == "1:16: drain_timeout: duration needs a unit, e.g. 2s (got '5')");
    CHECK(error_of("drain_timeout: 5x\n" + minimal_route).rfind("1:16: drain_timeout: bad duration '5x'", 0) == 0);
    CHECK(error_of("drain_timeout: -1s\n" + minimal_route).rfind("1:16: drain_timeout: bad duration '-1s'", 0) == 0);
    CHECK(error_of("drain_timeout: \"\"\n" + minimal_route).rfind("1:16: drain_timeout: bad duration ''", 0) == 0);
    CHECK(error_of(minimal_route + "    timeouts: { connect: 0s }\n") == "6:26: timeouts.connect must be greater than zero");
    CHECK(load_string("drain_timeout: 0s\n" + minimal_route, "z").drain_timeout.count() == 0);
}

TEST_CASE("route names and listen addresses must be unique") {
    auto two = [](const std::string& second_name, const std::string& second_listen) {
        return "routes:\n"
               "  - name: a\n"
               "    listen: 127.0.0.1:1\n"
               "    backends: [{address: 127.0.0.1:9}]\n"
               "  - name: " + second_name + "\n"
               "    listen: " + second_listen + "\n"
               "    backends: [{address: 127.0.0.1:9}]\n";
    };
    CHECK(error_of(two("a", "127.0.0.1:2")) == "5:11: duplicate route name 'a'");
    CHECK(error_of(two("b", "127.0.0.1:1")) == "6:13: listen address 127.0.0.1:1 is used twice");
}

TEST_CASE("wrong node types are refused at their position") {
    CHECK(error_of("workers: many\n" + minimal_route).rfind("1:10: workers must be a whole number", 0) == 0);
    CHECK(error_of("workers: 5000\n" + minimal_route).rfind("1:10: workers must be a whole number", 0) == 0);
    CHECK(error_of("metrics: 127.0.0.1:9090\n" + minimal_route) == "1:10: metrics must be a mapping");
    CHECK(error_of("routes: {name: r}\n") == "1:9: routes must be a non-empty list");
    CHECK(error_of("routes:\n  - name: [a, b]\n    listen: 127.0.0.1:1\n    backends: [{address: 127.0.0.1:9}]\n") ==
          "2:11: name must be a single value");
    CHECK(error_of("- just\n- a list\n").rfind("1:1: the config must be a mapping", 0) == 0);
    CHECK(error_of("") == "1:1: config is empty");
}

TEST_CASE("a missing config file is reported with its path") {
    try {
        load_file("/nonexistent/spliced.yaml");
        FAIL("accepted");
    } catch (const config_error& e) {
        CHECK(std::string(e.what()).rfind("/nonexistent/spliced.yaml:0:0: cannot open config file", 0) == 0);
    }
}

TEST_CASE("durations parse every unit and combinations") {
    CHECK(parse_duration("250ms") == std::chrono::milliseconds(250));
    CHECK(parse_duration("2s") == std::chrono::seconds(2));
    CHECK(parse_duration("5m") == std::chrono::minutes(5));
    CHECK(parse_duration("1h") == std::chrono::hours(1));
    CHECK(parse_duration("1d") == std::chrono::hours(24));
    CHECK(parse_duration("1m30s") == std::chrono::seconds(90));
    CHECK_FALSE(parse_duration("s"));
    CHECK_FALSE(parse_duration("1.5s"));
    CHECK_FALSE(parse_duration("1 s"));
}

TEST_CASE("addresses parse IPv4 and bracketed IPv6 literals and normalise their text") {
    auto v4 = parse_address("127.0.0.1:9000");
    REQUIRE(v4);
    CHECK(v4->family() == AF_INET);
    CHECK(v4->length == sizeof(sockaddr_in));
    CHECK(ntohs(reinterpret_cast<const sockaddr_in*>(&v4->storage)->sin_port) == 9000);
    auto v6 = parse_address("[0:0::1]:443");
    REQUIRE(v6);
    CHECK(v6->family() == AF_INET6);
    CHECK(v6->text == "[::1]:443");
    CHECK_FALSE(parse_address("::1:443"));
    CHECK_FALSE(parse_address("[::1]443"));
    CHECK_FALSE(parse_address("example.com:80"));
    CHECK_FALSE(parse_address("1.2.3.4:"));
    CHECK_FALSE(parse_address("1.2.3.4:8o"));
}
