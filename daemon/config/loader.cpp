// Reads a spliced YAML config file into config structs, refusing anything unknown or invalid with its position.
#include "config/loader.hpp"

#include <arpa/inet.h>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <yaml-cpp/yaml.h>

namespace spliced::config {

const char* to_string(datapath_kind k) {
    switch (k) {
    case datapath_kind::auto_select: return "auto";
    case datapath_kind::sockmap: return "sockmap";
    case datapath_kind::splice: return "splice";
    case datapath_kind::copy: return "copy";
    }
    return "?";
}

config_error::config_error(std::string file, int line, int column, const std::string& message)
    : std::runtime_error(file + ":" + std::to_string(line) + ":" + std::to_string(column) + ": " + message),
      file_(std::move(file)),
      line_(line),
      column_(column),
      message_(message) {}

std::optional<std::chrono::milliseconds> parse_duration(std::string_view text) {
    if (text.empty()) return std::nullopt;
    std::chrono::milliseconds total{0};
    std::size_t i = 0;
    while (i < text.size()) {
        std::size_t start = i;
        std::uint64_t value = 0;
        while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
            value = value * 10 + static_cast<std::uint64_t>(text[i] - '0');
            if (value > 1'000'000'000ull) return std::nullopt;
            ++i;
        }
        if (i == start) return std::nullopt;
        std::size_t unit_start = i;
        while (i < text.size() && text[i] >= 'a' && text[i] <= 'z') ++i;
        auto unit = text.substr(unit_start, i - unit_start);
        std::uint64_t ms;
        if (unit == "ms") ms = 1;
        else if (unit == "s") ms = 1000;
        else if (unit == "m") ms = 60'000;
        else if (unit == "h") ms = 3'600'000;
        else if (unit == "d") ms = 86'400'000;
        else return std::nullopt;
        total += std::chrono::milliseconds(value * ms);
    }
    return total;
}

std::optional<address> parse_address(std::string_view text) {
    address a;
    std::string host;
    std::string_view port_text;
    if (!text.empty() && text.front() == '[') {
        auto close = text.find(']');
        if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') return std::nullopt;
        host = std::string(text.substr(1, close - 1));
        port_text = text.substr(close + 2);
        auto* sa = reinterpret_cast<sockaddr_in6*>(&a.storage);
        if (::inet_pton(AF_INET6, host.c_str(), &sa->sin6_addr) != 1) return std::nullopt;
        sa->sin6_family = AF_INET6;
        a.length = sizeof(sockaddr_in6);
    } else {
        auto colon = text.rfind(':');
        if (colon == std::string_view::npos) return std::nullopt;
        host = std::string(text.substr(0, colon));
        port_text = text.substr(colon + 1);
        auto* sa = reinterpret_cast<sockaddr_in*>(&a.storage);
        if (::inet_pton(AF_INET, host.c_str(), &sa->sin_addr) != 1) return std::nullopt;
        sa->sin_family = AF_INET;
        a.length = sizeof(sockaddr_in);
    }
    if (port_text.empty() || port_text.size() > 5) return std::nullopt;
    unsigned port = 0;
    for (char c : port_text) {
        if (c < '0' || c > '9') return std::nullopt;
        port = port * 10 + static_cast<unsigned>(c - '0');
    }
    if (port == 0 || port > 65535) return std::nullopt;
    if (a.family() == AF_INET6) {
        reinterpret_cast<sockaddr_in6*>(&a.storage)->sin6_port = htons(static_cast<std::uint16_t>(port));
        char buf[INET6_ADDRSTRLEN];
        ::inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(&a.storage)->sin6_addr, buf, sizeof(buf));
        a.text = "[" + std::string(buf) + "]:" + std::to_string(port);
    } else {
        reinterpret_cast<sockaddr_in*>(&a.storage)->sin_port = htons(static_cast<std::uint16_t>(port));
        a.text = host + ":" + std::to_string(port);
    }
    return a;
}

namespace {

// Walks the YAML tree; every error carries the position of the node it is about.
class reader {
public:
    explicit reader(std::string source) : source_(std::move(source)) {}

    [[noreturn]] void fail(const YAML::Node& node, const std::string& message) const {
        auto m = node.Mark();
        throw config_error(source_, m.line + 1, m.column + 1, message);
    }

    // Checks a map's keys against the known and the not-yet-supported ones.
    void check_keys(const YAML::Node& map, const char* where, std::initializer_list<const char*> known,
                    std::initializer_list<const char*> not_yet = {}) const {
        if (!map.IsMap()) fail(map, std::string(where) + " must be a mapping");
        std::set<std::string> seen;
        for (auto it = map.begin(); it != map.end(); ++it) {
            const YAML::Node& key = it->first;
            if (!key.IsScalar()) fail(key, std::string("keys in ") + where + " must be plain names");
            auto name = key.Scalar();
            if (!seen.insert(name).second) fail(key, "duplicate key '" + name + "' in " + where);
            bool ok = false;
            for (auto k : known) ok |= name == k;
            if (ok) continue;
            for (auto k : not_yet)
                if (name == k) fail(key, "'" + name + "' is not supported yet");
            std::string list;
            for (auto k : known) list += std::string(list.empty() ? "" : ", ") + k;
            fail(key, "unknown key '" + name + "' in " + where + " (expected one of: " + list + ")");
        }
    }

    std::string scalar(const YAML::Node& n, const char* what) const {
        if (!n.IsScalar()) fail(n, std::string(what) + " must be a single value");
        return n.Scalar();
    }

    std::chrono::milliseconds duration(const YAML::Node& n, const char* what, bool allow_zero) const {
        auto text = scalar(n, what);
        bool digits_only = !text.empty() && text.find_first_not_of("0123456789") == std::string::npos;
        if (digits_only) fail(n, std::string(what) + ": duration needs a unit, e.g. 2s (got '" + text + "')");
        auto d = parse_duration(text);
        if (!d) fail(n, std::string(what) + ": bad duration '" + text + "' (use ms, s, m, h, d, e.g. 500ms, 2s, 1m30s)");
        if (!allow_zero && d->count() == 0) fail(n, std::string(what) + " must be greater than zero");
        return *d;
    }

    address addr(const YAML::Node& n, const char* what) const {
        auto text = scalar(n, what);
        auto a = parse_address(text);
        if (!a) fail(n, std::string(what) + ": bad address '" + text +
                            "' (expected IP:port or [IPv6]:port, port 1-65535)");
        return *a;
    }

    datapath_kind datapath(const YAML::Node& n) const {
        auto v = scalar(n, "datapath");
        if (v == "auto") return datapath_kind::auto_select;
        if (v == "sockmap") return datapath_kind::sockmap;
        if (v == "splice") return datapath_kind::splice;
        if (v == "copy") return datapath_kind::copy;
        fail(n, "unknown datapath '" + v + "' (expected auto, sockmap, splice or copy)");
    }

    log_level level(const YAML::Node& n) const {
        auto v = scalar(n, "log.level");
        static const std::pair<const char*, log_level> names[] = {
            {"trace", log_level::trace}, {"debug", log_level::debug}, {"info", log_level::info},
            {"warn", log_level::warn},   {"error", log_level::error}, {"critical", log_level::critical}};
        for (auto& [name, l] : names)
            if (v == name) return l;
        fail(n, "unknown log level '" + v + "' (expected trace, debug, info, warn, error or critical)");
    }

    unsigned workers(const YAML::Node& n) const {
        auto v = scalar(n, "workers");
        if (v.empty() || v.size() > 4 || v.find_first_not_of("0123456789") != std::string::npos || std::stoul(v) > 1024)
            fail(n, "workers must be a whole number from 0 (one per CPU) to 1024 (got '" + v + "')");
        return static_cast<unsigned>(std::stoul(v));
    }

    route read_route(const YAML::Node& n, datapath_kind default_path) const {
        check_keys(n, "route", {"name", "listen", "datapath", "balance", "timeouts", "backends"},
                   {"max_connections", "send_proxy_protocol", "accept_proxy_protocol", "health_check"});
        route r;
        r.datapath = default_path;
        if (!n["name"]) fail(n, "route needs a 'name'");
        r.name = scalar(n["name"], "name");
        if (r.name.empty() || r.name.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                                       "0123456789_.-") != std::string::npos)
            fail(n["name"], "route name '" + r.name + "' must be non-empty and use only A-Z a-z 0-9 _ . -");
        if (!n["listen"]) fail(n, "route '" + r.name + "' needs 'listen'");
        const YAML::Node listen = n["listen"];
        if (listen.IsSequence()) {
            if (listen.size() == 0) fail(listen, "route '" + r.name + "': listen is an empty list");
            for (const auto& l : listen) r.listen.push_back(addr(l, "listen"));
        } else {
            r.listen.push_back(addr(listen, "listen"));
        }
        if (n["datapath"]) {
            r.datapath = datapath(n["datapath"]);
            r.datapath_set = true;
        }
        if (n["balance"]) {
            auto b = scalar(n["balance"], "balance");
            if (b == "least_conn" || b == "random" || b == "source_hash")
                fail(n["balance"], "balance '" + b + "' is not supported yet (only round_robin)");
            if (b != "round_robin")
                fail(n["balance"], "unknown balance '" + b + "' (expected round_robin, least_conn, random or source_hash)");
        }
        if (n["timeouts"]) {
            const YAML::Node t = n["timeouts"];
            check_keys(t, "timeouts", {"connect", "idle"});
            if (t["connect"]) r.timeouts.connect = duration(t["connect"], "timeouts.connect", false);
            if (t["idle"]) r.timeouts.idle = duration(t["idle"], "timeouts.idle", false);
        }
        if (!n["backends"]) fail(n, "route '" + r.name + "' needs 'backends'");
        const YAML::Node backends = n["backends"];
        if (!backends.IsSequence()) fail(backends, "backends must be a list");
        if (backends.size() == 0) fail(backends, "route '" + r.name + "' has an empty backend list");
        for (const auto& b : backends) {
            check_keys(b, "backend", {"address"}, {"weight"});
            if (!b["address"]) fail(b, "backend needs an 'address'");
            r.backends.push_back({addr(b["address"], "backend address")});
        }
        return r;
    }

    config read(const YAML::Node& root) const {
        config c;
        c.source = source_;
        if (!root.IsDefined() || root.IsNull()) throw config_error(source_, 1, 1, "config is empty");
        check_keys(root, "the config", {"datapath", "workers", "drain_timeout", "metrics", "log", "routes"});
        if (root["datapath"]) c.datapath = datapath(root["datapath"]);
        if (root["workers"]) c.workers = workers(root["workers"]);
        if (root["drain_timeout"]) c.drain_timeout = duration(root["drain_timeout"], "drain_timeout", true);
        if (root["metrics"]) {
            const YAML::Node m = root["metrics"];
            check_keys(m, "metrics", {"listen"});
            if (!m["listen"]) fail(m, "metrics needs 'listen'");
            c.metrics.enabled = true;
            c.metrics.listen = addr(m["listen"], "metrics.listen");
        }
        if (root["log"]) {
            const YAML::Node l = root["log"];
            check_keys(l, "log", {"level", "access_log"});
            if (l["level"]) c.log.level = level(l["level"]);
            if (l["access_log"]) {
                c.log.access_log = scalar(l["access_log"], "log.access_log");
                if (c.log.access_log.empty())
                    fail(l["access_log"], "log.access_log must be stdout, off or a file path");
            }
        }
        if (!root["routes"]) fail(root, "the config needs 'routes'");
        const YAML::Node routes = root["routes"];
        if (!routes.IsSequence() || routes.size() == 0) fail(routes, "routes must be a non-empty list");
        std::set<std::string> names, listens;
        for (const auto& rn : routes) {
            auto r = read_route(rn, c.datapath);
            if (!names.insert(r.name).second) fail(rn["name"], "duplicate route name '" + r.name + "'");
            const YAML::Node l = rn["listen"];
            for (std::size_t i = 0; i < r.listen.size(); ++i)
                if (!listens.insert(r.listen[i].text).second)
                    fail(l.IsSequence() ? l[i] : l, "listen address " + r.listen[i].text + " is used twice");
            if (c.metrics.enabled && listens.count(c.metrics.listen.text))
                fail(l, "listen address " + c.metrics.listen.text + " is also metrics.listen");
            c.routes.push_back(std::move(r));
        }
        return c;
    }

private:
    std::string source_;
};

}  // namespace

config load_string(std::string_view yaml, const std::string& source) {
    YAML::Node root;
    try {
        root = YAML::Load(std::string(yaml));
    } catch (const YAML::ParserException& e) {
        throw config_error(source, e.mark.line + 1, e.mark.column + 1, "YAML syntax error: " + e.msg);
    }
    return reader(source).read(root);
}

config load_file(const std::string& path) {
    std::ifstream in(path);
    if (!in) throw config_error(path, 0, 0, std::string("cannot open config file: ") + std::strerror(errno));
    std::stringstream text;
    text << in.rdbuf();
    return load_string(text.str(), path);
}

}  // namespace spliced::config
