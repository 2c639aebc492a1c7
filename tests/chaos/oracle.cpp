// The oracle. Per direction (sender Y -> receiver X), from what the kernel guarantees:
//
//  - Content: X read a byte-exact prefix of what Y sent (the urgent byte is an ordinary byte of the stream:
//    every socket involved has SO_OOBINLINE, spliced's included).
//  - EOF: recv() returns 0 on X only after a FIN on X's socket. The proxy may send that FIN only after the
//    FIN of Y (a shutdown(SHUT_WR), or a close() with nothing unread; a close() with unread bytes and a
//    SO_LINGER 0 close send an RST instead), and only after every byte Y sent before it. So EOF on X requires
//    received == sent by Y, Y's FIN, and Y's FIN before X's EOF in time. The idle timeout is no exception: it
//    cuts a connection that made no progress either way for the timeout (access log end=idle_timeout) with a
//    reset on both sides (README), so it never produces an EOF of its own.
//  - RST on X (ECONNRESET / EPIPE) is always allowed where some side resets or closes before reading to its
//    end: a close() is not a half-close, bytes for a closed socket are answered with an RST, and the proxy
//    passes that on. In a polite scenario (both sides only half-close and read to the end) nothing is lost and
//    both sides must see the other's complete stream and EOF: an RST or a failed send() there is a violation,
//    unless the idle timeout ended the connection: when a reader stalled past it (with bytes on their way), or
//    when both sides wait for a FIN that neither sends. In the latter case each side must have received the
//    other's complete stream first: an idle end with bytes undelivered is the daemon's own stall.
//  - A side still running at the scenario's cap is a hang (every plan ends by itself, the idle timeout ends
//    what the sides leave open).
//  - The backend gets the connection unless the client reset (README: a client that closes at once is still
//    connected upstream and gets its bytes and FIN passed on).
//
// What is not checked, because the kernel does not make it certain: whether X saw the RST at all once it had
// read an EOF (an RST after a FIN leaves the EOF in place), and which of data and RST came first when X did not
// read everything (an RST does not purge the receive queue; either order is fine for the prefix check).
#include "oracle.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <sstream>

namespace chaos {

bool parse_access_line(const std::string& line, access_entry& out) {
    auto field = [&](const char* key) -> std::string {
        const std::string k = std::string(" ") + key + "=";
        auto at = line.find(k);
        if (at == std::string::npos) return {};
        at += k.size();
        return line.substr(at, line.find(' ', at) - at);
    };
    out.line = line;
    out.route = field("route");
    out.client = field("client");
    out.datapath = field("datapath");
    out.end = field("end");
    return !out.route.empty() && !out.client.empty() && !out.end.empty();
}

namespace {

std::string hex(std::uint8_t b) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "0x%02x", b);
    return buf;
}

struct direction {
    const char* label;  // "client->backend"
    const char* sender_name;
    const char* receiver_name;
    const side_plan& sender_plan;
    const side_result& sender;
    const side_result& receiver;
};

void judge_direction(const direction& d, bool polite, bool idle_closed, std::vector<std::string>& out) {
    auto violation = [&](const std::string& text) { out.push_back(std::string(d.label) + ": " + text); };
    const auto& x = d.receiver;
    const auto& y = d.sender;
    if (x.mismatch_at) {
        std::string why = "byte " + std::to_string(*x.mismatch_at) + " differs from what the " + d.sender_name +
                          " sent (got " + hex(x.got) + ", want " + hex(x.want) + ")";
        if (auto u = d.sender_plan.urgent_offset(); u && *u <= *x.mismatch_at)
            why += "; the urgent byte was at " + std::to_string(*u) +
                   (*u == *x.mismatch_at ? " (it was dropped or moved)" : "");
        violation(why);
    }
    if (x.received > y.sent)
        violation("received " + std::to_string(x.received) + " B but the " + d.sender_name + " sent only " +
                  std::to_string(y.sent));
    switch (x.end) {
    case read_end::eof:
        if (x.mismatch_at) {
            // A wrong stream (a dropped urgent byte, say) makes the byte count meaningless: reported above.
        } else if (x.received != y.sent) {
            const auto u = d.sender_plan.urgent_offset();
            violation("clean EOF after " + std::to_string(x.received) + " of the " + std::to_string(y.sent) +
                      " B the " + d.sender_name + " sent: a truncated stream passed off as complete" +
                      (idle_closed ? " (the daemon logged end=idle_timeout, which must end with a reset)" : "") +
                      (u && *u >= x.received && *u < y.sent
                           ? "; the urgent byte at " + std::to_string(*u) + " was not delivered"
                           : ""));
        } else if (!y.fin) {
            violation(std::string("clean EOF although the ") + d.sender_name + " never sent a FIN (it " +
                      (y.reset ? "reset" : y.closed ? "closed with unread bytes" : "did not close") +
                      "): should have been a reset");
        } else if (x.end_at < y.fin_at) {
            violation(std::string("clean EOF ") + std::to_string(ms_since(x.end_at, y.fin_at)) + " ms before the " +
                      d.sender_name + " sent its FIN");
        }
        break;
    case read_end::reset:
        if (polite)
            violation(std::string("reset (") + std::strerror(x.end_errno) + ") after " +
                      std::to_string(x.received) + " of " + std::to_string(y.sent) +
                      " B in a scenario where no side resets or closes early");
        break;
    case read_end::error:
        violation(std::string("recv() failed: ") + std::strerror(x.end_errno));
        break;
    case read_end::timeout:
        violation("no EOF or reset by the scenario's cap (" + std::to_string(scenario_cap_ms) + " ms) after " +
                  std::to_string(x.received) + " of " + std::to_string(y.sent) + " B");
        break;
    case read_end::none:
        break;
    }
    if (polite && x.end == read_end::none)
        violation(std::string("the ") + d.receiver_name + " never saw the end of the stream");
}

}  // namespace

std::vector<std::string> judge(const scenario& s, const side_result& client, const side_result& backend,
                               const access_entry* log) {
    std::vector<std::string> out;
    if (!client.connected) {
        out.push_back("client: connect() to the daemon failed: " + client.connect_error);
        return out;
    }
    const bool idle_closed = log && log->end == "idle_timeout";
    // The idle timeout may end even a polite connection when a reader stalls past it: with an RST where bytes
    // were still on their way, with FINs where none were. Without such a stall, a polite connection is idle only
    // once both sides wait for the other's FIN, with nothing on its way: FINs, complete streams. (An idle end
    // without that is the daemon's own stall, e.g. a stream stuck at an urgent byte.)
    auto long_stall = [](const side_plan& p) {
        return std::any_of(p.stalls.begin(), p.stalls.end(), [](const stall& st) { return st.len_ms > idle_timeout_ms; });
    };
    const bool stalled_past_idle = long_stall(s.client) || long_stall(s.backend);
    const bool polite = s.polite() && !idle_closed;
    if (s.polite() && idle_closed && !stalled_past_idle) {
        // Both sides waited for a FIN neither sent: the cut is right only once every byte had arrived.
        if (client.received != backend.sent || backend.received != client.sent)
            out.push_back("idle timeout with bytes undelivered (client got " + std::to_string(client.received) +
                          " of " + std::to_string(backend.sent) + " B, backend " + std::to_string(backend.received) +
                          " of " + std::to_string(client.sent) + " B) in a scenario with no stall past it: the "
                          "daemon stalled");
    }
    for (const side_result* side : {&client, &backend}) {
        const char* name = side == &client ? "client" : "backend";
        if (side->hit_cap && side->end != read_end::timeout)
            out.push_back(std::string(name) + ": still running at the scenario's cap (" +
                          std::to_string(scenario_cap_ms) + " ms), " + side->cap_in);
        if (polite && side->send_errno)
            out.push_back(std::string(name) + ": send() failed (" + std::strerror(side->send_errno) + ") after " +
                          std::to_string(side->sent) + " B in a scenario where no side resets or closes early");
    }
    if (!backend.connected) {
        if (!s.client_resets_early())
            out.push_back("backend: the daemon never connected (within " + std::to_string(accept_budget_ms) +
                          " ms), though the client did not reset");
        // Nothing reached or left the backend; the client's view of a missing backend is not judged here.
        return out;
    }
    judge_direction({"client->backend", "client", "backend", s.client, client, backend}, polite, idle_closed, out);
    judge_direction({"backend->client", "backend", "client", s.backend, backend, client}, polite, idle_closed, out);
    return out;
}

namespace {

std::string describe_side(const char* name, const side_result& r, clock::time_point t0) {
    std::ostringstream o;
    o << "    " << name << ": ";
    if (!r.connected) {
        o << "not connected" << (r.connect_error.empty() ? "" : " (" + r.connect_error + ")");
        return o.str();
    }
    o << "sent " << r.sent << " B";
    if (r.shut) o << ", SHUT_WR at +" << static_cast<long>(ms_since(t0, r.fin_at)) << "ms";
    if (r.send_errno) o << ", send failed: " << std::strerror(r.send_errno);
    if (r.reset) o << ", ended with a reset";
    if (r.closed) o << ", closed (" << r.unread_at_close << " B unread)";
    o << "; received " << r.received << " B, then " << to_string(r.end);
    if (r.end != read_end::none && r.end != read_end::timeout)
        o << " at +" << static_cast<long>(ms_since(t0, r.end_at)) << "ms";
    if (r.end_errno) o << " (" << std::strerror(r.end_errno) << ")";
    if (r.mismatch_at) o << "; first wrong byte at " << *r.mismatch_at;
    if (r.hit_cap) o << "; hit the cap while " << r.cap_in;
    return o.str();
}

}  // namespace

std::string describe_outcome(const side_result& client, const side_result& backend, clock::time_point t0) {
    return describe_side("client", client, t0) + "\n" + describe_side("backend", backend, t0);
}

}  // namespace chaos
