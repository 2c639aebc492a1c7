// Reads a spliced YAML config file into config structs, refusing anything unknown or invalid with its position:
// the file's checks, the YAML's, and the schema of spliced's keys (walked with config::walker).
#include "config/loader.hpp"

#include "config/sni.hpp"
#include "config/walker.hpp"
#include "config/yaml_tree.hpp"
#include "sys/fd.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <map>
#include <new>
#include <optional>
#include <set>
#include <sys/stat.h>
#include <unistd.h>
#include <variant>
#include <yaml-cpp/exceptions.h>

namespace spliced::config {

namespace {

// Opens `path` for appending as the access log will (creating the file, never its directory); nullopt
// when it can, else why not.
std::optional<std::string> appendable(const std::string& path) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
    if (fd < 0) return std::string(std::strerror(errno));
    struct stat st {};
    const bool regular = ::fstat(fd, &st) == 0 && (S_ISREG(st.st_mode) || S_ISCHR(st.st_mode) || S_ISFIFO(st.st_mode));
    ::close(fd);
    if (!regular) return std::string("not a file");
    return std::nullopt;
}

// spliced's keys; every error carries the position of the node it is about.
class reader : public walker {
public:
    // `open_files`: check that the files the config names can be opened (log.access_log).
    reader(std::string source, const resolver& resolve, bool open_files)
        : walker(std::move(source)), resolve_(resolve), open_files_(open_files) {}

    config read(const yaml::node& root) {
        if (!root.IsMap()) fail(root, std::string("the config must be a mapping of keys, not ") + kind_of(root));
        mapping top(*this, root, "the config",
                    {"datapath", "workers", "drain_timeout", "metrics", "log", "sockmap", "routes"});
        config c;
        c.source = source_;
        if (auto f = top.get("datapath")) c.datapath = named<datapath_kind>(*f, "datapath");
        if (auto f = top.get("workers")) c.workers = workers(*f);
        if (auto f = top.get("drain_timeout")) c.drain_timeout = duration(*f, true);
        if (auto f = top.get("metrics")) {
            mapping m(*this, map_value(*f), "metrics", {"listen"});
            auto listen = m.require("listen");
            c.metrics.enabled = true;
            c.metrics.listen = addr(value(listen), listen.what);
            listens_.emplace(c.metrics.listen.text(), "metrics.listen");
        }
        if (auto f = top.get("log")) {
            mapping l(*this, map_value(*f), "log", {"level", "access_log"});
            if (auto lf = l.get("level")) c.log.level = named<log_level>(*lf, "log level");
            if (auto lf = l.get("access_log")) {
                c.log.access_log = scalar(*lf);
                if (c.log.access_log.empty()) fail(lf->value, "log.access_log must be stdout, off or a file path");
                if (open_files_ && c.log.access_log != "stdout" && c.log.access_log != "off")
                    if (auto why = appendable(c.log.access_log))
                        fail(lf->value, "log.access_log: cannot open '" + c.log.access_log + "': " + *why);
            }
        }
        if (auto f = top.get("sockmap")) {
            mapping s(*this, map_value(*f), "sockmap", {"capacity"});
            if (auto sf = s.get("capacity")) c.sockmap.capacity = capacity(*sf);
        }
        auto routes = top.require("routes");
        const yaml::node list = value(routes);
        if (!list.IsSequence()) fail(list, std::string("routes must be a list of routes, not ") + kind_of(list));
        if (list.size() == 0) fail(list, "routes is empty: at least one route is needed");
        for (std::size_t i = 0; i < list.size(); ++i) c.routes.push_back(read_route(item(list, i, "routes"), c.datapath));
        check_shared_listens(c.routes);
        return c;
    }

private:
    unsigned workers(const field& f) const {
        auto v = scalar(f);
        if (v.empty() || v.size() > 4 || v.find_first_not_of("0123456789") != std::string::npos || std::stoul(v) > 1024)
            fail(f.value, "workers must be a whole number from 0 (one per CPU) to 1024 (got '" + v + "')");
        return static_cast<unsigned>(std::stoul(v));
    }

    // At most 2^20 connections (2^21 entries per map): past any RLIMIT_NOFILE Linux allows, and the
    // SOCKHASH allocates its buckets for all of them at load.
    std::uint32_t capacity(const field& f) const {
        constexpr unsigned long most = 1ul << 20;
        auto v = scalar(f);
        if (v.empty() || v.size() > 7 || v.find_first_not_of("0123456789") != std::string::npos || std::stoul(v) == 0 ||
            std::stoul(v) > most)
            fail(f.value, f.what + " must be a whole number of connections from 1 to " + std::to_string(most) +
                              " (got '" + v + "')");
        return static_cast<std::uint32_t>(std::stoul(v));
    }

    spliced::config::health_check health(const field& f) const {
        mapping h(*this, map_value(f), "health_check", {"interval", "timeout", "rise", "fall", "send", "expect", "port"});
        spliced::config::health_check c;
        if (auto hf = h.get("interval")) c.interval = duration(*hf, false);
        if (auto hf = h.get("timeout")) c.timeout = duration(*hf, false);
        if (auto hf = h.get("rise")) c.rise = count(*hf, 1, 100, "");
        if (auto hf = h.get("fall")) c.fall = count(*hf, 1, 100, "");
        if (auto hf = h.get("send")) c.send = scalar(*hf);
        if (auto hf = h.get("expect")) {
            c.expect = scalar(*hf);
            if (c.expect.size() > 1024) fail(hf->value, "health_check.expect is longer than 1024 bytes");
        }
        if (auto hf = h.get("port")) c.port = static_cast<std::uint16_t>(count(*hf, 1, 65535, ""));
        if (c.timeout > c.interval)
            fail(f.key, "health_check.timeout (" + std::to_string(c.timeout.count()) +
                            " ms) must not be longer than its interval (" + std::to_string(c.interval.count()) + " ms)");
        return c;
    }

    // A backend's address: an IP literal, or hostname:port resolved to every address it has (in a stable
    // order: IPv4 before IPv6, then by address), each a backend of its own.
    std::vector<address> backend_addresses(const yaml::node& n) const {
        auto text = scalar(n, "backend address");
        auto parsed = parse_address_or_reason(text);
        if (auto* a = std::get_if<address>(&parsed)) return {std::move(*a)};
        auto colon = text.rfind(':');
        const std::string host = colon == std::string::npos ? text : text.substr(0, colon);
        const bool hostname = !host.empty() && host.front() != '[' &&
                              host.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-") ==
                                  std::string::npos &&
                              host.find_first_not_of("0123456789.") != std::string::npos;
        if (!hostname || colon == std::string::npos)
            fail(n, "backend address: bad address '" + text + "': " + std::get<std::string>(parsed) +
                        "; expected IP:port, [IPv6]:port or hostname:port");
        // The port is checked like an IP literal's.
        auto port_check = parse_address_or_reason("0.0.0.0" + text.substr(colon));
        if (auto* why = std::get_if<std::string>(&port_check))
            fail(n, "backend address: bad address '" + text + "': " + *why);
        const auto port = static_cast<std::uint16_t>(std::stoul(text.substr(colon + 1)));
        if (!resolve_) fail(n, "backend address '" + text + "': hostnames are not resolved here");
        auto resolved = resolve_(host, port);
        if (auto* why = std::get_if<std::string>(&resolved))
            fail(n, "backend address '" + text + "': cannot resolve '" + host + "': " + *why);
        auto list = std::get<std::vector<address>>(std::move(resolved));
        if (list.empty()) fail(n, "backend address '" + text + "': '" + host + "' has no IPv4 or IPv6 address");
        std::sort(list.begin(), list.end(), [](const address& a, const address& b) {
            if (a.family() != b.family()) return a.family() == AF_INET;
            const auto x = a.ip(), y = b.ip();
            return std::lexicographical_compare(x.begin(), x.end(), y.begin(), y.end());
        });
        list.erase(std::unique(list.begin(), list.end(), [](const address& a, const address& b) { return a == b; }),
                   list.end());
        return list;
    }

    // Adds a listen address, refusing one that metrics or the same route already uses; routes that share
    // one are checked once all are read (check_shared_listens).
    address listen_address(const yaml::node& n, const std::string& route_name) {
        auto a = addr(n, "listen");
        const std::string text = a.text();
        auto it = listens_.find(text);
        if (it != listens_.end()) fail(n, "listen address " + text + " is already used by " + it->second);
        auto& users = shared_[text];
        for (const auto& u : users)
            if (u.route == route_name) fail(n, "listen address " + text + " is listed twice");
        users.push_back({route_name, n});
        return a;
    }

    // Routes that share a listen address: each takes the TLS server names of its match.sni, at most
    // one takes the rest (no match), no name is taken twice, and they agree on what the preamble is.
    void check_shared_listens(const std::vector<route>& routes) const {
        auto find = [&](const std::string& name) -> const route& {
            for (const auto& r : routes)
                if (r.name == name) return r;
            throw std::logic_error("route " + name);
        };
        for (const auto& [text, users] : shared_) {
            if (users.size() < 2) continue;
            const route& first = find(users[0].route);
            const route* fallback = first.sni.empty() ? &first : nullptr;
            std::map<std::string, std::string> taken;
            for (const auto& p : first.sni) taken.emplace(p, first.name);
            for (std::size_t i = 1; i < users.size(); ++i) {
                const route& r = find(users[i].route);
                const yaml::node& at = users[i].node;
                const std::string both = "routes '" + first.name + "' and '" + r.name + "' share " + text;
                if (r.sni.empty()) {
                    if (fallback)
                        fail(at, "routes '" + fallback->name + "' and '" + r.name + "' share " + text +
                                     " and neither has match.sni: at most one route per address may take the "
                                     "connections no name matches");
                    fallback = &r;
                }
                if (r.accept_proxy_protocol != first.accept_proxy_protocol)
                    fail(at, both + " but disagree on accept_proxy_protocol");
                if (r.timeouts.handshake != first.timeouts.handshake)
                    fail(at, both + " but disagree on timeouts.handshake");
                if (r.trusted_proxies.size() != first.trusted_proxies.size() ||
                    !std::equal(r.trusted_proxies.begin(), r.trusted_proxies.end(), first.trusted_proxies.begin(),
                                [](const cidr& a, const cidr& b) { return a.text == b.text; }))
                    fail(at, both + " but disagree on trusted_proxies");
                for (std::size_t k = 0; k < r.sni.size(); ++k) {
                    auto [it, fresh] = taken.emplace(r.sni[k], r.name);
                    if (!fresh)
                        fail(sni_nodes_.at(r.name)[k], "match.sni: '" + r.sni[k] + "' is also taken by route '" +
                                                           it->second + "' on " + text);
                }
            }
        }
    }

    route read_route(const yaml::node& n, datapath_kind default_path) {
        mapping m(*this, n, "route",
                  {"name", "listen", "match", "datapath", "balance", "timeouts", "accept_proxy_protocol",
                   "trusted_proxies", "send_proxy_protocol", "backends", "max_connections", "health_check",
                   "passive", "allow", "deny", "keepalive"});
        route r;
        r.name = route_name(m.require("name"));
        m.rename("route '" + r.name + "'");
        r.listen = listen_addresses(m.require("listen"), r.name);
        r.datapath = default_path;
        if (auto f = m.get("datapath")) {
            r.datapath = named<datapath_kind>(*f, "datapath");
            r.datapath_set = true;
        }
        if (auto f = m.get("balance")) r.balance = named<balance_kind>(*f, "balance");
        if (auto f = m.get("max_connections")) r.max_connections = count(*f, 1, 10'000'000, "connections");
        if (auto f = m.get("health_check")) r.health_check = health(*f);
        if (auto f = m.get("passive")) r.passive = passive(*f);
        if (auto f = m.get("timeouts")) r.timeouts = timeouts(*f);
        if (auto f = m.get("match")) r.sni = sni_patterns(*f, r.name);
        if (auto f = m.get("accept_proxy_protocol")) r.accept_proxy_protocol = boolean(*f);
        if (auto f = m.get("trusted_proxies")) {
            if (!r.accept_proxy_protocol) fail(f->key, "trusted_proxies needs accept_proxy_protocol: true");
            r.trusted_proxies = networks(*f, "trusted_proxies", "trust every source");
        }
        if (auto f = m.get("allow")) r.allow = networks(*f, "allow", "allow every source");
        if (auto f = m.get("deny")) r.deny = networks(*f, "deny", "deny no source");
        if (auto f = m.get("keepalive")) r.keepalive = keepalive_of(*f);
        if (auto f = m.get("send_proxy_protocol"))
            r.send_proxy_protocol = named<proxy_protocol_version>(*f, "send_proxy_protocol");
        r.backends = backends(m.require("backends"), r.name);
        return r;
    }

    std::string route_name(const field& f) {
        std::string name = scalar(f);
        if (name.empty() || name.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                                   "0123456789_.-") != std::string::npos)
            fail(f.value, "route name '" + name + "' must be non-empty and use only A-Z a-z 0-9 _ . -");
        if (!names_.insert(name).second) fail(f.value, "duplicate route name '" + name + "'");
        return name;
    }

    std::vector<address> listen_addresses(const field& f, const std::string& route) {
        const yaml::node l = value(f);
        if (!l.IsSequence()) return {listen_address(l, route)};
        if (l.size() == 0) fail(l, "route '" + route + "': listen is an empty list");
        std::vector<address> out;
        for (std::size_t i = 0; i < l.size(); ++i) out.push_back(listen_address(item(l, i, "listen"), route));
        return out;
    }

    passive_health passive(const field& f) const {
        mapping p(*this, map_value(f), "passive", {"failures", "eject"});
        passive_health ph;
        if (auto pf = p.get("failures")) ph.failures = count(*pf, 1, 1000, "");
        if (auto pf = p.get("eject")) ph.eject = duration(*pf, false);
        return ph;
    }

    spliced::config::keepalive keepalive_of(const field& f) const {
        mapping k(*this, map_value(f), "keepalive", {"idle", "interval", "count"});
        spliced::config::keepalive out;
        if (auto kf = k.get("idle")) out.idle = whole_seconds(*kf);
        if (auto kf = k.get("interval")) out.interval = whole_seconds(*kf);
        if (auto kf = k.get("count")) out.count = count(*kf, 1, 127, "probes");
        return out;
    }

    // A duration the kernel takes in seconds (TCP_KEEPIDLE, TCP_KEEPINTVL): 1 s to 32767 s, no fraction.
    std::chrono::seconds whole_seconds(const field& f) const {
        const auto d = duration(f, false);
        if (d.count() % 1000 != 0 || d < std::chrono::seconds(1) || d > std::chrono::seconds(32767))
            fail(f.value, f.what + " must be whole seconds from 1s to 32767s (got '" + scalar(f) + "')");
        return std::chrono::duration_cast<std::chrono::seconds>(d);
    }

    route_timeouts timeouts(const field& f) const {
        mapping t(*this, map_value(f), "timeouts", {"connect", "idle", "handshake", "queue", "lifetime"});
        route_timeouts out;
        if (auto tf = t.get("connect")) out.connect = duration(*tf, false);
        if (auto tf = t.get("idle")) out.idle = duration(*tf, false);
        if (auto tf = t.get("handshake")) out.handshake = duration(*tf, false);
        if (auto tf = t.get("queue")) out.queue = duration(*tf, true);
        if (auto tf = t.get("lifetime")) out.lifetime = duration(*tf, false);
        return out;
    }

    // match.sni: one pattern or a list, each normalised; remembered for the checks of shared addresses.
    std::vector<std::string> sni_patterns(const field& f, const std::string& route) {
        mapping mt(*this, map_value(f), "match", {"sni"});
        const yaml::node list = value(mt.require("sni"));
        std::vector<yaml::node> nodes;
        if (list.IsSequence()) {
            if (list.size() == 0) fail(list, "match.sni is an empty list");
            for (std::size_t i = 0; i < list.size(); ++i) nodes.push_back(item(list, i, "match.sni"));
        } else {
            nodes.push_back(list);
        }
        std::vector<std::string> out;
        for (const auto& node : nodes) {
            auto text = scalar(node, "match.sni");
            if (auto why = validate_sni_pattern(text)) fail(node, "match.sni: '" + text + "': " + *why);
            const std::string pattern = normalize_sni(text);
            if (std::find(out.begin(), out.end(), pattern) != out.end())
                fail(node, "match.sni: '" + text + "' is listed twice");
            out.push_back(pattern);
            sni_nodes_[route].push_back(node);
        }
        return out;
    }

    // A list of networks (trusted_proxies, allow, deny); `absent` says what leaving the key out means.
    std::vector<cidr> networks(const field& f, const std::string& key, const std::string& absent) const {
        const yaml::node list = value(f);
        if (!list.IsSequence()) fail(list, key + " must be a list, not " + kind_of(list));
        if (list.size() == 0) fail(list, key + " is an empty list (leave it out to " + absent + ")");
        std::vector<cidr> out;
        for (std::size_t i = 0; i < list.size(); ++i) {
            auto node = item(list, i, key);
            auto text = scalar(node, key);
            auto parsed = parse_cidr(text);
            if (auto* why = std::get_if<std::string>(&parsed))
                fail(node, key + ": bad network '" + text + "': " + *why + "; expected e.g. 10.0.0.0/8");
            out.push_back(std::get<cidr>(std::move(parsed)));
        }
        return out;
    }

    // The backends list: each entry an address (a hostname gives one backend per address it has), no address
    // twice.
    std::vector<backend> backends(const field& f, const std::string& route) const {
        const yaml::node list = value(f);
        if (!list.IsSequence()) fail(list, std::string("backends must be a list, not ") + kind_of(list));
        if (list.size() == 0) fail(list, "route '" + route + "' has an empty backend list");
        std::vector<backend> out;
        std::map<std::string, yaml::node> seen;  // backend address -> its entry
        for (std::size_t i = 0; i < list.size(); ++i) {
            mapping b(*this, item(list, i, "backends"), "backend", {"address", "weight", "max_connections"});
            auto where = b.require("address");
            backend proto;
            if (auto bf = b.get("weight")) proto.weight = count(*bf, 0, 256, "");
            if (auto bf = b.get("max_connections")) proto.max_connections = count(*bf, 1, 10'000'000, "connections");
            for (auto& a : backend_addresses(value(where))) {
                const std::string name = a.text();
                if (auto [it, fresh] = seen.emplace(name, value(where)); !fresh) {
                    auto m = it->second.Mark();
                    fail(value(where), "route '" + route + "': backend " + name + " is listed twice (also at line " +
                                           std::to_string(m.line + 1) + ")");
                }
                backend bk = proto;
                bk.name = name;
                bk.addr = a;
                out.push_back(std::move(bk));
            }
        }
        return out;
    }

    struct listen_user {
        std::string route;
        yaml::node node;  // the listen entry, for messages
    };
    const resolver& resolve_;
    bool open_files_;
    std::set<std::string> names_;                  // route names seen so far
    std::map<std::string, std::string> listens_;  // metrics.listen -> "metrics.listen"
    std::map<std::string, std::vector<listen_user>> shared_;     // route listen address -> routes on it
    std::map<std::string, std::vector<yaml::node>> sni_nodes_;  // route -> its match.sni entries
};

// Line and column (1-based) of byte `at` of `text`.
std::pair<int, int> position_of(std::string_view text, std::size_t at) {
    int line = 1, column = 1;
    for (std::size_t i = 0; i < at; ++i) {
        if (text[i] == '\n') {
            ++line;
            column = 1;
        } else {
            ++column;
        }
    }
    return {line, column};
}

config load(std::string_view yaml, const std::string& source, const resolver& resolve, bool open_files) {
    if (auto nul = yaml.find('\0'); nul != std::string_view::npos) {
        auto [line, column] = position_of(yaml, nul);
        throw config_error(source, line, column, "a NUL byte: a config is text");
    }
    yaml::parsed doc;
    try {
        doc = yaml::parse(yaml, max_config_nodes);
    } catch (const YAML::Exception& e) {
        // ParserException and friends; a mark-less exception has line/column -1 and reports 0:0.
        throw config_error(source, e.mark.line + 1, e.mark.column + 1, "YAML syntax error: " + e.msg);
    } catch (const yaml::too_many_nodes& e) {
        throw config_error(source, e.at.line + 1, e.at.column + 1,
                           "the config has more than " + std::to_string(max_config_nodes) +
                               " YAML nodes (values, lists and mappings)");
    }
    const yaml::node root = doc.first.root();
    if (!root || root.IsNull()) throw config_error(source, 1, 1, "config is empty");
    if (doc.second)
        throw config_error(source, doc.second->line + 1, doc.second->column + 1,
                           "only one YAML document is allowed in a config file");
    return reader(source, resolve, open_files).read(root);
}

// Whatever runs out of memory reading a config refuses that config, and only that.
template <typename F>
config without_exhaustion(const std::string& source, F&& f) {
    try {
        return f();
    } catch (const std::bad_alloc&) {
        throw config_error(source, 0, 0, "out of memory while reading the config");
    }
}

}  // namespace

config load_string(std::string_view yaml, const std::string& source, const resolver& resolve) {
    return without_exhaustion(source, [&] { return load(yaml, source, resolve, false); });
}

config load_file(const std::string& path, const resolver& resolve) {
    auto cannot = [&](const std::string& why) { return config_error(path, 0, 0, "cannot open config file: " + why); };
    sys::unique_fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
    if (!fd) throw cannot(std::strerror(errno));
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) throw cannot(std::strerror(errno));
    if (!S_ISREG(st.st_mode)) throw cannot(S_ISDIR(st.st_mode) ? std::strerror(EISDIR) : "not a regular file");
    const auto too_big = [&] {
        return cannot("larger than " + std::to_string(max_config_bytes >> 20) + " MiB (" + std::to_string(st.st_size) +
                      " bytes)");
    };
    if (static_cast<std::uint64_t>(st.st_size) > max_config_bytes) throw too_big();
    return without_exhaustion(path, [&] {
        std::string text;
        char buf[16384];
        for (;;) {
            ssize_t n = ::read(fd.get(), buf, sizeof(buf));
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) throw cannot(std::strerror(errno));
            if (n == 0) break;
            text.append(buf, static_cast<std::size_t>(n));
            if (text.size() > max_config_bytes) throw too_big();  // it grew while read
        }
        fd.reset();
        return load(text, path, resolve, true);
    });
}

}  // namespace spliced::config
