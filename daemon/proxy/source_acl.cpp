// A route's allow and deny lists.
#include "proxy/source_acl.hpp"

#include <algorithm>

namespace spliced::proxy {

bool admits(const config::route& r, const config::address& client) {
    auto in = [&](const std::vector<config::cidr>& list) {
        return std::any_of(list.begin(), list.end(), [&](const config::cidr& n) { return n.contains(client); });
    };
    if (r.allow.empty() && r.deny.empty()) return true;
    if (client.empty()) return false;  // no address to judge: refused where a list exists
    return (r.allow.empty() || in(r.allow)) && !in(r.deny);
}

}  // namespace spliced::proxy
