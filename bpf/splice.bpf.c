// SPDX-License-Identifier: GPL-2.0
/* SK_SKB verdict program: redirect every skb a proxied socket receives to its peer socket. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "splice_abi.h"

char LICENSE[] SEC("license") = "GPL";

/* Proxied sockets keyed by socket cookie; 8-byte values take a 64-bit fd from userspace. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, SPLICED_MAP_CAPACITY);
	__type(key, __u64);
	__type(value, __u64);
} sockhash SEC(".maps");

/* Receiving socket's cookie -> where its bytes go. Written by userspace before insertion. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SPLICED_MAP_CAPACITY);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct spliced_peer_value);
} peers SEC(".maps");

/* Receiving socket's cookie -> the most its redirected_bytes may reach: the egress bound. The
 * kernel gives redirects no backpressure, so userspace raises this ceiling to what the peer has
 * taken into its send queue plus a fixed allowance, as it sees the peer take bytes; a sender that
 * outruns it has its direction demoted to userspace (whose writes block on the peer's send
 * buffer). A separate map: userspace never rewrites a peers value, which would race the
 * verdict's byte counter.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SPLICED_MAP_CAPACITY);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, __u64);
} budget SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SPLICED_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

static __always_inline void count(__u32 slot, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &slot);

	if (v)
		*v += n;
}

SEC("sk_skb/stream_verdict")
int spliced_verdict(struct __sk_buff *skb)
{
	__u64 cookie = bpf_get_socket_cookie(skb);
	struct spliced_peer_value *peer;
	__u32 len = skb->len;
	__u64 *ceiling;
	long verdict;

	/* Zero-length skbs come with FIN and carry no byte. Redirecting one breaks the peer
	 * socket. Passing one is no better: if this socket's backlog still holds skbs redirected
	 * to it, the pass is queued behind them, and the kworker's zero-byte ingress counts as a
	 * hard error that disables the backlog, stranding those bytes. Drop it: the FIN itself is
	 * already recorded by TCP, so userspace still reads EOF.
	 */
	if (len == 0) {
		count(SPLICED_CNT_DROP_EMPTY, 1);
		return SK_DROP;
	}
	peer = bpf_map_lookup_elem(&peers, &cookie);
	if (!peer) {
		count(SPLICED_CNT_NO_PEER_ENTRY, 1);
		return SK_PASS;
	}
	/* Sticky: once a direction is copied by userspace, every later skb must follow it there
	 * or bytes would be reordered.
	 */
	if (peer->flags & SPLICED_PEER_DEMOTED) {
		count(SPLICED_CNT_PASS_DEMOTED, 1);
		return SK_PASS;
	}
	ceiling = bpf_map_lookup_elem(&budget, &cookie);
	if (!ceiling || peer->redirected_bytes + len > *ceiling) {
		/* Every skb before this one was redirected and counted in redirected_bytes; this one
		 * and all after it go to userspace, which sends them once the peer took the rest.
		 * Verdicts of one socket run one at a time, so this branch runs once per direction.
		 */
		__sync_fetch_and_or(&peer->flags, SPLICED_PEER_DEMOTED);
		count(SPLICED_CNT_EGRESS_DEMOTED, 1);
		return SK_PASS;
	}
	verdict = bpf_sk_redirect_hash(skb, &sockhash, &peer->peer_cookie, 0);
	if (verdict != SK_PASS) {
		/* Peer not in the map: fail open. SK_DROP here would lose the bytes silently. */
		__sync_fetch_and_or(&peer->flags, SPLICED_PEER_DEMOTED);
		count(SPLICED_CNT_PEER_MISS, 1);
		return SK_PASS;
	}
	__sync_fetch_and_add(&peer->redirected_bytes, len);
	__sync_fetch_and_add(&peer->redirected_packets, 1);
	count(SPLICED_CNT_REDIRECT_PACKETS, 1);
	count(SPLICED_CNT_REDIRECT_BYTES, len);
	return SK_PASS;
}
