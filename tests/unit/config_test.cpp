// Config loader: every key parsed, every refusal positioned at file:line:col.
#include "config/loader.hpp"

#include <catch2/catch.hpp>
#include <arpa/inet.h>
#include <cstdio>
#include <fstream>
#include <string>
#include <unistd.h>

using namespace spliced::config;

namespace {

// Loads `yaml` expecting a refusal; returns "line:col: message".
std::string error_of(const std::string& yaml) {
    try {
        load_string(yaml, "t.yaml");
    } catch (const config_error& e) {
        std::string w = e.what();
        REQUIRE(w.rfind("t.yaml:", 0) == 0);
        CHECK(e.file() == "t.yaml");
        CHECK(w == "t.yaml:" + std::to_string(e.line()) + ":" + std::to_string(e.column()) + ": " + e.message());
        return w.substr(7);
    }
    FAIL("config was accepted:\n" << yaml);
    return {};
}

bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

const std::string minimal_route = "routes:\n"
                                  "  - name: r\n"
                                  "    listen: 127.0.0.1:8080\n"
                                  "    backends:\n"
                                  "      - address: 127.0.0.1:9000\n";

// A route whose listen value is `value` (on line 3, column 13).
std::string listen_error(const std::string& value) {
    return error_of("routes:\n  - name: r\n    listen: " + value + "\n    backends: [{address: 127.0.0.1:9}]\n");
}

// A route whose only backend address is `value` (on line 5, column 18).
std::string backend_error(const std::string& value) {
    return error_of("routes:\n  - name: r\n    listen: 127.0.0.1:1\n    backends:\n      - address: " + value + "\n");
}

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
                         "sockmap:\n"
                         "  capacity: 1000\n"
                         "routes:\n"
                         "  - name: web\n"
                         "    listen: [\"0.0.0.0:8443\", \"[::]:8443\"]\n"
                         "    datapath: sockmap\n"
                         "    balance: round_robin\n"
                         "    timeouts: { connect: 250ms, idle: 1h }\n"
                         "    backends:\n"
                         "      - address: 127.0.0.1:9000\n"
                         "      - address: \"[::1]:9001\"\n"
                         "  - name: other.v2_x-y\n"
                         "    listen: 127.0.0.1:7000\n"
                         "    backends: [{ address: 10.0.0.1:80 }]\n",
                         "full.yaml");
    CHECK(c.source == "full.yaml");
    CHECK(c.datapath == datapath_kind::splice);
    CHECK(c.workers == 3);
    CHECK(c.drain_timeout == std::chrono::seconds(90));
    CHECK(c.metrics.enabled);
    CHECK(c.metrics.listen.text() == "127.0.0.1:9090");
    CHECK(c.log.level == log_level::debug);
    CHECK(c.log.access_log == "/var/log/spliced/access.log");
    CHECK(c.sockmap.capacity == 1000);
    REQUIRE(c.routes.size() == 2);
    const auto& web = c.routes[0];
    CHECK(web.name == "web");
    REQUIRE(web.listen.size() == 2);
    CHECK(web.listen[0].text() == "0.0.0.0:8443");
    CHECK(web.listen[0].family() == AF_INET);
    CHECK(web.listen[1].text() == "[::]:8443");
    CHECK(web.listen[1].family() == AF_INET6);
    CHECK(web.datapath == datapath_kind::sockmap);
    CHECK(web.datapath_set);
    CHECK(web.timeouts.connect == std::chrono::milliseconds(250));
    CHECK(web.timeouts.idle == std::chrono::hours(1));
    REQUIRE(web.backends.size() == 2);
    CHECK(web.backends[0].name == "127.0.0.1:9000");
    CHECK(web.backends[1].name == "[::1]:9001");
    const auto& other = c.routes[1];
    CHECK(other.name == "other.v2_x-y");
    REQUIRE(other.listen.size() == 1);
    CHECK(other.listen[0].text() == "127.0.0.1:7000");
    REQUIRE(other.backends.size() == 1);
    CHECK(other.backends[0].name == "10.0.0.1:80");
}

TEST_CASE("a route without datapath inherits the top-level one and is marked as not overriding it") {
    auto c = load_string("datapath: copy\n" + minimal_route, "i.yaml");
    CHECK(c.routes[0].datapath == datapath_kind::copy);
    CHECK_FALSE(c.routes[0].datapath_set);
}

TEST_CASE("defaults apply when optional keys are left out") {
    auto c = load_string(minimal_route, "m.yaml");
    CHECK(c.datapath == datapath_kind::auto_select);
    CHECK(c.workers == 0);
    CHECK(c.drain_timeout == std::chrono::seconds(30));
    CHECK_FALSE(c.metrics.enabled);
    CHECK(c.log.level == log_level::info);
    CHECK(c.log.access_log == "stdout");
    CHECK(c.routes[0].datapath == datapath_kind::auto_select);
    CHECK(c.routes[0].timeouts.connect == std::chrono::seconds(2));
    CHECK(c.routes[0].timeouts.idle == std::chrono::hours(1));
    CHECK(c.sockmap.capacity == 65536);
}

TEST_CASE("every enum spelling of the design is accepted") {
    for (auto [text, kind] : {std::pair{"auto", datapath_kind::auto_select}, std::pair{"sockmap", datapath_kind::sockmap},
                              std::pair{"splice", datapath_kind::splice}, std::pair{"copy", datapath_kind::copy}}) {
        CHECK(load_string(std::string("datapath: ") + text + "\n" + minimal_route, "e").datapath == kind);
        CHECK(std::string(to_string(kind)) == text);
    }
    for (auto [text, level] : {std::pair{"trace", log_level::trace}, std::pair{"debug", log_level::debug},
                               std::pair{"info", log_level::info}, std::pair{"warn", log_level::warn},
                               std::pair{"error", log_level::error}, std::pair{"critical", log_level::critical}})
        CHECK(load_string(std::string("log: { level: ") + text + " }\n" + minimal_route, "e").log.level == level);
    CHECK(load_string("log: { access_log: off }\n" + minimal_route, "e").log.access_log == "off");
    CHECK(load_string("log: { access_log: logs/access.log }\n" + minimal_route, "e").log.access_log == "logs/access.log");
    CHECK(load_string("workers: 1024\n" + minimal_route, "e").workers == 1024);
}

TEST_CASE("unknown keys are refused at the key's position, at every level") {
    CHECK(starts_with(error_of("datapth: auto\n" + minimal_route), "1:1: unknown key 'datapth' in the config"));
    CHECK(starts_with(error_of("routes:\n  - name: r\n    lisen: 127.0.0.1:1\n"), "3:5: unknown key 'lisen' in route"));
    CHECK(starts_with(error_of(minimal_route + "        port: 3\n"), "6:9: unknown key 'port' in backend"));
    CHECK(starts_with(error_of("log:\n  colour: true\n" + minimal_route), "2:3: unknown key 'colour' in log"));
    CHECK(starts_with(error_of("metrics:\n  listen: 127.0.0.1:1\n  path: /m\n" + minimal_route),
                      "3:3: unknown key 'path' in metrics"));
    CHECK(starts_with(error_of(minimal_route + "    timeouts: { connect: 1s, read: 2s }\n"),
                      "6:30: unknown key 'read' in timeouts"));
    // The message lists what is allowed there.
    CHECK(error_of("datapth: auto\n" + minimal_route).find("(expected one of: datapath, workers") != std::string::npos);
}

TEST_CASE("a key given twice in one mapping is refused at the second one") {
    CHECK(error_of("workers: 1\nworkers: 2\n" + minimal_route) == "2:1: duplicate key 'workers' in the config");
}

TEST_CASE("backend pool keys: balance, limits, queue timeout, weights, active and passive health") {
    auto c = load_string("routes:\n"
                         "  - name: r\n"
                         "    listen: 127.0.0.1:8080\n"
                         "    balance: least_conn\n"
                         "    max_connections: 100\n"
                         "    timeouts: { queue: 250ms }\n"
                         "    health_check:\n"
                         "      interval: 2s\n"
                         "      timeout: 500ms\n"
                         "      rise: 3\n"
                         "      fall: 4\n"
                         "      send: \"PING\\r\\n\"\n"
                         "      expect: \"+PONG\"\n"
                         "      port: 9001\n"
                         "    passive: { failures: 5, eject: 10s }\n"
                         "    backends:\n"
                         "      - { address: 127.0.0.1:9000, weight: 0 }\n"
                         "      - { address: \"[::1]:9000\", weight: 256, max_connections: 7 }\n",
                         "p.yaml");
    const auto& r = c.routes.at(0);
    CHECK(r.balance == balance_kind::least_conn);
    CHECK(r.max_connections == 100);
    CHECK(r.timeouts.queue == std::chrono::milliseconds(250));
    REQUIRE(r.health_check);
    CHECK(r.health_check->interval == std::chrono::seconds(2));
    CHECK(r.health_check->timeout == std::chrono::milliseconds(500));
    CHECK(r.health_check->rise == 3);
    CHECK(r.health_check->fall == 4);
    CHECK(r.health_check->send == "PING\r\n");
    CHECK(r.health_check->expect == "+PONG");
    CHECK(r.health_check->port == 9001);
    REQUIRE(r.passive);
    CHECK(r.passive->failures == 5);
    CHECK(r.passive->eject == std::chrono::seconds(10));
    REQUIRE(r.backends.size() == 2);
    CHECK(r.backends[0].weight == 0);
    CHECK(r.backends[0].max_connections == 0);
    CHECK(r.backends[1].weight == 256);
    CHECK(r.backends[1].max_connections == 7);
    // Defaults.
    auto d = load_string(minimal_route, "d.yaml").routes.at(0);
    CHECK(d.balance == balance_kind::round_robin);
    CHECK(d.max_connections == 0);
    CHECK(d.timeouts.queue == std::chrono::seconds(5));
    CHECK_FALSE(d.health_check);
    CHECK_FALSE(d.passive);
    CHECK(d.backends.at(0).weight == 1);
    for (auto k : {balance_kind::round_robin, balance_kind::least_conn, balance_kind::random, balance_kind::source_hash})
        CHECK(load_string(minimal_route + "    balance: " + to_string(k) + "\n", "b").routes.at(0).balance == k);
    auto h = load_string(minimal_route + "    health_check: {}\n", "h").routes.at(0).health_check;
    REQUIRE(h);
    CHECK(h->interval == std::chrono::seconds(5));
    CHECK(h->timeout == std::chrono::seconds(1));
    CHECK(h->rise == 2);
    CHECK(h->fall == 3);
    CHECK(h->send.empty());
    CHECK(h->port == 0);
}

TEST_CASE("bad backend pool values are refused at their position") {
    CHECK(error_of(minimal_route + "    balance: fastest\n") ==
          "6:14: unknown balance 'fastest' (expected round_robin, least_conn, random or source_hash)");
    CHECK(error_of(minimal_route + "        weight: 257\n") ==
          "6:17: weight must be a whole number from 0 to 256 (got '257')");
    CHECK(error_of(minimal_route + "        weight: -1\n") ==
          "6:17: weight must be a whole number from 0 to 256 (got '-1')");
    CHECK(error_of(minimal_route + "        max_connections: 0\n") ==
          "6:26: max_connections must be a whole number of connections from 1 to 10000000 (got '0')");
    CHECK(error_of(minimal_route + "    max_connections: lots\n") ==
          "6:22: max_connections must be a whole number of connections from 1 to 10000000 (got 'lots')");
    CHECK(error_of(minimal_route + "    health_check: { rise: 0 }\n") ==
          "6:27: health_check.rise must be a whole number from 1 to 100 (got '0')");
    CHECK(error_of(minimal_route + "    health_check: { port: 70000 }\n") ==
          "6:27: health_check.port must be a whole number from 1 to 65535 (got '70000')");
    CHECK(error_of(minimal_route + "    health_check: { interval: 1s, timeout: 2s }\n") ==
          "6:5: health_check.timeout (2000 ms) must not be longer than its interval (1000 ms)");
    CHECK(starts_with(error_of(minimal_route + "    health_check: { every: 1s }\n"),
                      "6:21: unknown key 'every' in health_check"));
    CHECK(error_of(minimal_route + "    passive: { failures: 0 }\n") ==
          "6:26: passive.failures must be a whole number from 1 to 1000 (got '0')");
    CHECK(starts_with(error_of(minimal_route + "    passive: { eject: soon }\n"), "6:23: passive.eject: bad duration"));
    CHECK(starts_with(error_of(minimal_route + "    timeouts: { queue: forever }\n"), "6:24: timeouts.queue: bad duration"));
    CHECK(error_of(minimal_route + "      - address: 127.0.0.1:9000\n") ==
          "6:18: route 'r': backend 127.0.0.1:9000 is listed twice (also at line 5)");
}

namespace {

// Stands in for getaddrinfo: names the test knows, anything else fails like an unknown name.
std::variant<std::vector<address>, std::string> fake_resolve(const std::string& host, std::uint16_t port) {
    auto at = [&](const char* ip) { return *parse_address(std::string(ip) + ":" + std::to_string(port)); };
    auto v6 = [&](const char* ip) { return *parse_address("[" + std::string(ip) + "]:" + std::to_string(port)); };
    if (host == "db.internal") return std::vector<address>{v6("fd00::2"), at("10.0.0.9"), at("10.0.0.3"), at("10.0.0.9")};
    if (host == "empty.internal") return std::vector<address>{};
    return std::string("Name or service not known");
}

}  // namespace

TEST_CASE("a backend hostname becomes one backend per address, IPv4 first, in address order") {
    auto c = load_string("routes:\n  - name: r\n    listen: 127.0.0.1:1\n    backends:\n"
                         "      - { address: \"db.internal:5432\", weight: 3, max_connections: 9 }\n",
                         "h.yaml", fake_resolve);
    const auto& b = c.routes.at(0).backends;
    REQUIRE(b.size() == 3);
    CHECK(b[0].name == "10.0.0.3:5432");
    CHECK(b[1].name == "10.0.0.9:5432");
    CHECK(b[2].name == "[fd00::2]:5432");
    for (const auto& e : b) {
        CHECK(e.weight == 3);
        CHECK(e.max_connections == 9);
    }
    auto with = [](const std::string& value) {
        try {
            load_string("routes:\n  - name: r\n    listen: 127.0.0.1:1\n    backends:\n      - address: " + value + "\n",
                        "h.yaml", fake_resolve);
        } catch (const config_error& e) {
            return std::string(e.what()).substr(7);
        }
        return std::string("accepted");
    };
    CHECK(with("nowhere.internal:80") ==
          "5:18: backend address 'nowhere.internal:80': cannot resolve 'nowhere.internal': Name or service not known");
    CHECK(with("empty.internal:80") == "5:18: backend address 'empty.internal:80': 'empty.internal' has no IPv4 or IPv6 address");
    CHECK(starts_with(with("db.internal:0"), "5:18: backend address: bad address 'db.internal:0': port 0 is out of range"));
    CHECK(starts_with(with("db.internal"), "5:18: backend address: bad address 'db.internal': missing ':port'"));
    // The same address twice, once by name: refused like any duplicate.
    CHECK(with("10.0.0.3:5432\n      - address: db.internal:5432") ==
          "6:18: route 'r': backend 10.0.0.3:5432 is listed twice (also at line 5)");
}

TEST_CASE("YAML syntax errors carry the parser's position") {
    CHECK(error_of("routes:\n  - name: [unclosed\n") == "3:1: YAML syntax error: end of sequence flow not found");
    CHECK(error_of("routes:\n\t- name: r\n") == "2:2: YAML syntax error: illegal block entry");
}

TEST_CASE("a file holding several YAML documents is refused at the second one") {
    CHECK(error_of(minimal_route + "---\nworkers: 2\n") == "7:1: only one YAML document is allowed in a config file");
}

TEST_CASE("bad listen addresses are refused at the value: hostnames, missing or out-of-range ports, bad IPv6") {
    CHECK(listen_error("localhost:80") ==
          "3:13: listen: bad address 'localhost:80': 'localhost' is not an IP address (hostnames are not resolved); "
          "expected IP:port or [IPv6]:port");
    CHECK(starts_with(listen_error("127.0.0.1:0"), "3:13: listen: bad address '127.0.0.1:0': port 0 is out of range 1-65535"));
    CHECK(starts_with(listen_error("127.0.0.1:70000"), "3:13: listen: bad address '127.0.0.1:70000': port 70000 is out of range"));
    CHECK(starts_with(listen_error("127.0.0.1"), "3:13: listen: bad address '127.0.0.1': missing ':port'"));
    CHECK(starts_with(listen_error("127.0.0.1:http"), "3:13: listen: bad address '127.0.0.1:http': port is not a number"));
    CHECK(starts_with(listen_error("\"[::1\""), "3:13: listen: bad address '[::1': missing ']'"));
    CHECK(starts_with(listen_error("\"::1:80\""), "3:13: listen: bad address '::1:80': IPv6 addresses need brackets"));
    CHECK(starts_with(listen_error("\"[1.2.3.4]:80\""), "3:13: listen: bad address '[1.2.3.4]:80': '1.2.3.4' is not an IPv6"));
    CHECK(listen_error("[]") == "3:13: route 'r': listen is an empty list");
    CHECK(starts_with(error_of("routes:\n  - name: r\n    listen: [127.0.0.1:1, \"bad\"]\n    backends: [{address: 127.0.0.1:9}]\n"),
                      "3:27: listen: bad address 'bad'"));
}

TEST_CASE("bad backend addresses are refused at the value, port 0 and hostnames included") {
    CHECK(starts_with(backend_error("300.1.1.1:80"), "5:18: backend address: bad address '300.1.1.1:80': '300.1.1.1' is not an IP address;"));
    CHECK(starts_with(backend_error("127.0.0.1:0"), "5:18: backend address: bad address '127.0.0.1:0': port 0 is out of range"));
    CHECK(starts_with(backend_error("127.0.0.1:70000"), "5:18: backend address: bad address '127.0.0.1:70000': port 70000"));
    // Without a resolver (the fuzzer, these tests), a hostname is refused rather than looked up.
    CHECK(backend_error("db.internal:5432") == "5:18: backend address 'db.internal:5432': hostnames are not resolved here");
    CHECK(error_of("metrics: { listen: \"localhost:9090\" }\n" + minimal_route).find("1:20: metrics.listen: bad address") == 0);
}

TEST_CASE("an empty or missing backend list, or a backend without address, is refused") {
    CHECK(error_of("routes:\n  - name: r\n    listen: 127.0.0.1:1\n    backends: []\n") ==
          "4:15: route 'r' has an empty backend list");
    CHECK(error_of("routes:\n  - name: r\n    listen: 127.0.0.1:1\n") == "2:5: route 'r' needs 'backends'");
    CHECK(error_of("routes:\n  - name: r\n    listen: 127.0.0.1:1\n    backends:\n      - {}\n") == "5:9: backend needs 'address'");
    CHECK(error_of("routes:\n  - name: r\n    listen: 127.0.0.1:1\n    backends:\n") == "4:5: backends needs a value");
}

TEST_CASE("a route needs a name and a listen address, and routes must not be empty") {
    CHECK(error_of("routes:\n  - listen: 127.0.0.1:1\n    backends: [{address: 127.0.0.1:9}]\n") == "2:5: route needs 'name'");
    CHECK(error_of("routes:\n  - name: r\n    backends: [{address: 127.0.0.1:9}]\n") == "2:5: route 'r' needs 'listen'");
    CHECK(error_of("workers: 1\n") == "1:1: the config needs 'routes'");
    CHECK(error_of("routes: []\n") == "1:9: routes is empty: at least one route is needed");
    CHECK(starts_with(error_of("routes:\n  - name: \"a b\"\n    listen: 127.0.0.1:1\n    backends: [{address: 127.0.0.1:9}]\n"),
                      "2:11: route name 'a b' must be non-empty and use only"));
    CHECK(starts_with(error_of("routes:\n  - name: \"\"\n    listen: 127.0.0.1:1\n    backends: [{address: 127.0.0.1:9}]\n"),
                      "2:11: route name '' must be non-empty"));
}

TEST_CASE("unknown enum values are refused with the valid ones listed") {
    CHECK(error_of("datapath: ebpf\n" + minimal_route) == "1:11: unknown datapath 'ebpf' (expected auto, sockmap, splice or copy)");
    CHECK(starts_with(error_of(minimal_route + "    datapath: fast\n"), "6:15: unknown datapath 'fast'"));
    CHECK(error_of("log: { level: verbose }\n" + minimal_route) ==
          "1:15: unknown log level 'verbose' (expected trace, debug, info, warn, error or critical)");
}

TEST_CASE("bad durations are refused: no unit, unknown unit, negative, empty, zero where it makes no sense") {
    CHECK(error_of("drain_timeout: 5\n" + minimal_route) == "1:16: drain_timeout: duration needs a unit, e.g. 2s (got '5')");
    CHECK(starts_with(error_of("drain_timeout: 5x\n" + minimal_route), "1:16: drain_timeout: bad duration '5x'"));
    CHECK(starts_with(error_of("drain_timeout: -1s\n" + minimal_route), "1:16: drain_timeout: bad duration '-1s'"));
    CHECK(starts_with(error_of("drain_timeout: \"\"\n" + minimal_route), "1:16: drain_timeout: bad duration ''"));
    CHECK(error_of("drain_timeout:\n" + minimal_route) == "1:1: drain_timeout needs a value");
    CHECK(error_of(minimal_route + "    timeouts: { connect: 0s }\n") == "6:26: timeouts.connect must be greater than zero");
    CHECK(error_of(minimal_route + "    timeouts:\n      idle: 0ms\n") == "7:13: timeouts.idle must be greater than zero");
    CHECK(error_of(minimal_route + "    timeouts: { idle: 10 }\n") == "6:23: timeouts.idle: duration needs a unit, e.g. 2s (got '10')");
    CHECK(load_string("drain_timeout: 0s\n" + minimal_route, "z").drain_timeout.count() == 0);
}

TEST_CASE("route names and listen addresses must be unique, refused at the second occurrence") {
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
    CHECK(error_of(two("b", "127.0.0.1:1")) ==
          "6:13: routes 'a' and 'b' share 127.0.0.1:1 and neither has match.sni: at most one route per address may "
          "take the connections no name matches");
    // Compared after normalisation, so two spellings of one IPv6 address collide.
    CHECK(error_of(two("b", "[\"[::1]:5\", \"[0::1]:5\"]")) == "6:25: listen address [::1]:5 is listed twice");
    CHECK(error_of("metrics: { listen: 127.0.0.1:8080 }\n" + minimal_route) ==
          "4:13: listen address 127.0.0.1:8080 is already used by metrics.listen");
}

TEST_CASE("wrong node types are refused at their position") {
    CHECK(starts_with(error_of("workers: many\n" + minimal_route), "1:10: workers must be a whole number from 0"));
    CHECK(starts_with(error_of("workers: 5000\n" + minimal_route), "1:10: workers must be a whole number"));
    CHECK(starts_with(error_of("workers: -1\n" + minimal_route), "1:10: workers must be a whole number"));
    CHECK(error_of("workers: [1]\n" + minimal_route) == "1:10: workers must be a single value, not a list");
    CHECK(error_of("metrics: 127.0.0.1:9090\n" + minimal_route) == "1:10: metrics must be a mapping, not a single value");
    CHECK(error_of("log: [info]\n" + minimal_route) == "1:6: log must be a mapping, not a list");
    CHECK(error_of("datapath: { kind: copy }\n" + minimal_route) == "1:11: datapath must be a single value, not a mapping");
    CHECK(error_of("routes: {name: r}\n") == "1:9: routes must be a list of routes, not a mapping");
    CHECK(error_of("routes:\n  - web\n") == "2:5: route must be a mapping, not a single value");
    CHECK(error_of("routes:\n  - name: [a, b]\n    listen: 127.0.0.1:1\n    backends: [{address: 127.0.0.1:9}]\n") ==
          "2:11: name must be a single value, not a list");
    CHECK(error_of("routes:\n  - name: r\n    listen: {a: 1}\n    backends: [{address: 127.0.0.1:9}]\n") ==
          "3:13: listen must be a single value, not a mapping");
    CHECK(error_of("routes:\n  - name: r\n    listen: 127.0.0.1:1\n    backends: 127.0.0.1:9\n") ==
          "4:15: backends must be a list, not a single value");
    CHECK(error_of("routes:\n  - name: r\n    listen: 127.0.0.1:1\n    backends: [127.0.0.1:9]\n") ==
          "4:16: backend must be a mapping, not a single value");
    CHECK(error_of(minimal_route + "    timeouts: 5s\n") == "6:15: timeouts must be a mapping, not a single value");
    CHECK(error_of("[a]: 1\n" + minimal_route) == "1:1: keys in the config must be plain names, not a list");
}

TEST_CASE("an empty file, a comment-only file and a non-mapping root are refused") {
    CHECK(error_of("") == "1:1: config is empty");
    CHECK(error_of("# nothing here\n") == "1:1: config is empty");
    CHECK(error_of("- just\n- a list\n") == "1:1: the config must be a mapping of keys, not a list");
    CHECK(error_of("hello\n") == "1:1: the config must be a mapping of keys, not a single value");
}

TEST_CASE("sockmap.capacity takes a whole number of connections from 1 to 2^20") {
    CHECK(load_string("sockmap: { capacity: 4 }\n" + minimal_route, "s").sockmap.capacity == 4);
    CHECK(load_string("sockmap:\n  capacity: 1\n" + minimal_route, "s").sockmap.capacity == 1);
    CHECK(load_string("sockmap: { capacity: 1048576 }\n" + minimal_route, "s").sockmap.capacity == 1048576);
    CHECK(load_string("sockmap: {}\n" + minimal_route, "s").sockmap.capacity == 65536);
    const std::string range = "sockmap.capacity must be a whole number of connections from 1 to 1048576";
    CHECK(error_of("sockmap: { capacity: 0 }\n" + minimal_route) == "1:22: " + range + " (got '0')");
    CHECK(error_of("sockmap: { capacity: 1048577 }\n" + minimal_route) == "1:22: " + range + " (got '1048577')");
    CHECK(error_of("sockmap: { capacity: 99999999999 }\n" + minimal_route) == "1:22: " + range + " (got '99999999999')");
    CHECK(error_of("sockmap:\n  capacity: -4\n" + minimal_route) == "2:13: " + range + " (got '-4')");
    CHECK(error_of("sockmap:\n  capacity: 4k\n" + minimal_route) == "2:13: " + range + " (got '4k')");
    CHECK(error_of("sockmap:\n  capacity:\n" + minimal_route) == "2:3: sockmap.capacity needs a value");
    CHECK(error_of("sockmap: { capacity: [4] }\n" + minimal_route) ==
          "1:22: sockmap.capacity must be a single value, not a list");
    CHECK(error_of("sockmap: 4\n" + minimal_route) == "1:10: sockmap must be a mapping, not a single value");
    CHECK(starts_with(error_of("sockmap:\n  capacity: 4\n  size: 8\n" + minimal_route),
                      "3:3: unknown key 'size' in sockmap (expected one of: capacity)"));
}

TEST_CASE("a config file is read from disk and named by its path in errors") {
    char dir_template[] = "/tmp/spliced-config-test-XXXXXX";
    REQUIRE(::mkdtemp(dir_template));
    std::string dir = dir_template;
    std::string good = dir + "/good.yaml", bad = dir + "/bad.yaml";
    std::ofstream(good) << minimal_route;
    std::ofstream(bad) << "workers: x\n" << minimal_route;
    CHECK(load_file(good).source == good);
    try {
        load_file(bad);
        FAIL("accepted");
    } catch (const config_error& e) {
        CHECK(starts_with(e.what(), bad + ":1:10: workers must be"));
    }
    try {
        load_file(dir);
        FAIL("accepted a directory");
    } catch (const config_error& e) {
        CHECK(std::string(e.what()) == dir + ":0:0: cannot open config file: Is a directory");
    }
    std::remove(good.c_str());
    std::remove(bad.c_str());
    ::rmdir(dir.c_str());
}

TEST_CASE("a missing config file is reported with its path and the system's reason") {
    try {
        load_file("/nonexistent/spliced.yaml");
        FAIL("accepted");
    } catch (const config_error& e) {
        CHECK(std::string(e.what()) == "/nonexistent/spliced.yaml:0:0: cannot open config file: No such file or directory");
        CHECK(e.line() == 0);
        CHECK(e.column() == 0);
    }
}

TEST_CASE("durations parse every unit and combinations, and refuse anything else") {
    CHECK(parse_duration("250ms") == std::chrono::milliseconds(250));
    CHECK(parse_duration("2s") == std::chrono::seconds(2));
    CHECK(parse_duration("5m") == std::chrono::minutes(5));
    CHECK(parse_duration("1h") == std::chrono::hours(1));
    CHECK(parse_duration("1d") == std::chrono::hours(24));
    CHECK(parse_duration("1m30s") == std::chrono::seconds(90));
    CHECK(parse_duration("1h1m1s1ms") == std::chrono::milliseconds(3'661'001));
    CHECK(parse_duration("0s") == std::chrono::milliseconds(0));
    CHECK(parse_duration("1000d") == std::chrono::hours(24'000));
    CHECK_FALSE(parse_duration(""));
    CHECK_FALSE(parse_duration("5"));
    CHECK_FALSE(parse_duration("5x"));
    CHECK_FALSE(parse_duration("-1s"));
    CHECK_FALSE(parse_duration("s"));
    CHECK_FALSE(parse_duration("1.5s"));
    CHECK_FALSE(parse_duration("1 s"));
    CHECK_FALSE(parse_duration("1S"));
    CHECK_FALSE(parse_duration("1001d"));
    CHECK_FALSE(parse_duration("99999999999999999999999s"));
}

TEST_CASE("addresses parse IPv4 and bracketed IPv6 literals into socket addresses with normalised text") {
    auto v4 = parse_address("127.0.0.1:9000");
    REQUIRE(v4);
    CHECK(v4->family() == AF_INET);
    CHECK(v4->size() == sizeof(sockaddr_in));
    CHECK(v4->text() == "127.0.0.1:9000");
    const auto* sin = reinterpret_cast<const sockaddr_in*>(v4->data());
    CHECK(ntohs(sin->sin_port) == 9000);
    CHECK(ntohl(sin->sin_addr.s_addr) == INADDR_LOOPBACK);

    auto v6 = parse_address("[0:0::1]:443");
    REQUIRE(v6);
    CHECK(v6->family() == AF_INET6);
    CHECK(v6->size() == sizeof(sockaddr_in6));
    CHECK(v6->text() == "[::1]:443");
    const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(v6->data());
    CHECK(ntohs(sin6->sin6_port) == 443);
    CHECK(IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr));

    CHECK(parse_address("[::]:1")->text() == "[::]:1");
    CHECK(parse_address("[2001:DB8::1]:65535")->text() == "[2001:db8::1]:65535");
    CHECK(parse_address("[::ffff:10.0.0.1]:80")->text() == "[::ffff:10.0.0.1]:80");
    CHECK(parse_address("10.0.0.1:0080")->text() == "10.0.0.1:80");
}

TEST_CASE("addresses that are not IP:port or [IPv6]:port with a port in 1..65535 are refused") {
    for (auto bad : {"", "::1:443", "[::1]443", "[::1]:", "[::1", "example.com:80", "localhost:80", "1.2.3.4:",
                     "1.2.3.4:8o", "1.2.3.4", "1.2.3.4:0", "1.2.3.4:65536", "1.2.3.4:999999", "1.2.3:80",
                     "256.1.1.1:80", "01.2.3.4:80", "[1.2.3.4]:80", "[fe80::1%lo]:80", " 1.2.3.4:80", "1.2.3.4:80 "})
        CHECK_FALSE(parse_address(bad));
}

TEST_CASE("a stray comma after a scalar is refused, not parsed for ever (yaml-cpp 0.7 LoadAll loops on it)") {
    // Found by tests/fuzz/config_fuzz; with YAML::LoadAll this never returned and kept allocating.
    CHECK_FALSE(error_of("key: value\n,\n").empty());
    CHECK_FALSE(error_of("# spliced example\ndatapath: auto\nrouted pas:s\n,,,,,,,,,,,,,,,,\n      - address:@ 1\n").empty());
}

namespace {

// Two routes on 127.0.0.1:1; `a_extra` and `b_extra` are extra route lines (4-space indented).
std::string shared(const std::string& a_extra, const std::string& b_extra) {
    return "routes:\n"
           "  - name: a\n"
           "    listen: 127.0.0.1:1\n" +
           a_extra +
           "    backends: [{address: 127.0.0.1:9}]\n"
           "  - name: b\n"
           "    listen: 127.0.0.1:1\n" +
           b_extra + "    backends: [{address: 127.0.0.1:9}]\n";
}

}  // namespace

TEST_CASE("the preamble keys parse: match.sni normalised, PROXY protocol both ways, trusted networks, handshake") {
    auto c = load_string("routes:\n"
                         "  - name: web\n"
                         "    listen: 127.0.0.1:443\n"
                         "    match: { sni: [\"WWW.Example.com.\", \"*.example.com\"] }\n"
                         "    accept_proxy_protocol: true\n"
                         "    trusted_proxies: [\"10.0.0.0/8\", \"2001:db8::/32\", \"192.0.2.7\"]\n"
                         "    send_proxy_protocol: v2\n"
                         "    timeouts: { handshake: 3s }\n"
                         "    backends: [{address: 127.0.0.1:9}]\n",
                         "t.yaml");
    const auto& r = c.routes.at(0);
    CHECK(r.sni == std::vector<std::string>{"www.example.com", "*.example.com"});
    CHECK(r.accept_proxy_protocol);
    CHECK(r.send_proxy_protocol == proxy_protocol_version::v2);
    CHECK(r.timeouts.handshake == std::chrono::seconds(3));
    REQUIRE(r.trusted_proxies.size() == 3);
    CHECK(r.trusted_proxies[2].bits == 32);
    auto in = [&](const char* ip, std::size_t net) {
        sockaddr_storage ss{};
        if (std::string(ip).find(':') != std::string::npos) {
            auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
            a->sin6_family = AF_INET6;
            REQUIRE(inet_pton(AF_INET6, ip, &a->sin6_addr) == 1);
        } else {
            auto* a = reinterpret_cast<sockaddr_in*>(&ss);
            a->sin_family = AF_INET;
            REQUIRE(inet_pton(AF_INET, ip, &a->sin_addr) == 1);
        }
        return r.trusted_proxies[net].contains(spliced::net::address::from(reinterpret_cast<sockaddr*>(&ss)));
    };
    CHECK(in("10.255.0.1", 0));
    CHECK_FALSE(in("11.0.0.1", 0));
    CHECK(in("::ffff:10.1.2.3", 0));  // an IPv4 client on a dual-stack socket
    CHECK(in("2001:db8:1::5", 1));
    CHECK_FALSE(in("2001:db9::5", 1));
    CHECK(in("192.0.2.7", 2));
    CHECK_FALSE(in("192.0.2.8", 2));
    CHECK(load_string(minimal_route, "t").routes[0].send_proxy_protocol == proxy_protocol_version::off);
    CHECK(load_string(minimal_route, "t").routes[0].timeouts.handshake == std::chrono::seconds(5));
}

TEST_CASE("routes may share a listen address by SNI; the loader refuses what cannot be routed, with positions") {
    // One default and named routes: fine.
    CHECK(load_string(shared("    match: { sni: [a.example.com] }\n", ""), "t").routes.size() == 2);
    CHECK(load_string(shared("    match: { sni: [\"*.example.com\"] }\n", "    match: { sni: [a.example.com] }\n"),
                      "t").routes.size() == 2);  // exact and wildcard may coexist: exact wins
    CHECK(error_of(shared("    match: { sni: [a.example.com] }\n", "    match: { sni: [x.org, A.Example.COM.] }\n")) ==
          "8:27: match.sni: 'a.example.com' is also taken by route 'a' on 127.0.0.1:1");
    CHECK(error_of(shared("    accept_proxy_protocol: true\n", "    match: { sni: [a.example.com] }\n")) ==
          "7:13: routes 'a' and 'b' share 127.0.0.1:1 but disagree on accept_proxy_protocol");
    CHECK(error_of(shared("", "    match: { sni: [a.example.com] }\n    timeouts: { handshake: 1s }\n")) ==
          "6:13: routes 'a' and 'b' share 127.0.0.1:1 but disagree on timeouts.handshake");
    CHECK(starts_with(error_of(shared("    match: { sni: [\"a.*.com\"] }\n", "")), "4:20: match.sni: 'a.*.com': "));
    CHECK(starts_with(error_of(shared("    match: { sni: [\"\"] }\n", "")), "4:20: match.sni: '': "));
    CHECK(error_of(shared("    match: { sni: [a.example.com, A.example.com] }\n", "")) ==
          "4:35: match.sni: 'A.example.com' is listed twice");
}

TEST_CASE("the preamble keys refuse bad values at their position") {
    CHECK(error_of(minimal_route + "    accept_proxy_protocol: yes\n") ==
          "6:28: accept_proxy_protocol must be true or false (got 'yes')");
    CHECK(error_of(minimal_route + "    send_proxy_protocol: v3\n") ==
          "6:26: unknown send_proxy_protocol 'v3' (expected off, v1 or v2)");
    CHECK(error_of(minimal_route + "    trusted_proxies: [10.0.0.0/8]\n") ==
          "6:5: trusted_proxies needs accept_proxy_protocol: true");
    CHECK(error_of(minimal_route + "    accept_proxy_protocol: true\n    trusted_proxies: [10.0.0.1/8]\n") ==
          "7:23: trusted_proxies: bad network '10.0.0.1/8': address has bits set past the /8 prefix; expected e.g. "
          "10.0.0.0/8");
    CHECK(error_of(minimal_route + "    accept_proxy_protocol: true\n    trusted_proxies: [10.0.0.0/33]\n") ==
          "7:23: trusted_proxies: bad network '10.0.0.0/33': prefix length 33 is over 32; expected e.g. 10.0.0.0/8");
    CHECK(error_of(minimal_route + "    timeouts: { handshake: 0s }\n") == "6:28: timeouts.handshake must be greater than zero");
}

TEST_CASE("keepalive and timeouts.lifetime: defaults, values, and errors at their position") {
    const auto plain = load_string(minimal_route, "t.yaml").routes.at(0);
    CHECK_FALSE(plain.keepalive);
    CHECK(plain.timeouts.lifetime.count() == 0);
    const auto r = load_string(minimal_route + "    keepalive: { idle: 2m, interval: 5s, count: 3 }\n"
                                               "    timeouts: { lifetime: 24h }\n",
                               "t.yaml")
                       .routes.at(0);
    REQUIRE(r.keepalive);
    CHECK(r.keepalive->idle == std::chrono::seconds(120));
    CHECK(r.keepalive->interval == std::chrono::seconds(5));
    CHECK(r.keepalive->count == 3);
    CHECK(r.timeouts.lifetime == std::chrono::hours(24));
    const auto defaults = load_string(minimal_route + "    keepalive: {}\n", "t.yaml").routes.at(0);
    REQUIRE(defaults.keepalive);
    CHECK(defaults.keepalive->idle == std::chrono::seconds(60));
    CHECK(defaults.keepalive->interval == std::chrono::seconds(10));
    CHECK(defaults.keepalive->count == 6);
    CHECK(error_of(minimal_route + "    keepalive: { idle: 1500ms }\n") ==
          "6:24: keepalive.idle must be whole seconds from 1s to 32767s (got '1500ms')");
    CHECK(error_of(minimal_route + "    keepalive: { interval: 10h }\n") ==
          "6:28: keepalive.interval must be whole seconds from 1s to 32767s (got '10h')");
    CHECK(error_of(minimal_route + "    keepalive: { count: 0 }\n") ==
          "6:25: keepalive.count must be a whole number of probes from 1 to 127 (got '0')");
    CHECK(starts_with(error_of(minimal_route + "    keepalive: { probes: 3 }\n"), "6:18: unknown key 'probes'"));
    CHECK(error_of(minimal_route + "    timeouts: { lifetime: 0s }\n") == "6:27: timeouts.lifetime must be greater than zero");
}
