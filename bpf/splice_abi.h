/* Constants and fixed-width structs shared by the SK_SKB verdict program and the daemon. */
#ifndef SPLICED_SPLICE_ABI_H
#define SPLICED_SPLICE_ABI_H

#include <linux/types.h>

/* Capacity of the SOCKHASH and the peer map: two entries per sockmap connection. */
#define SPLICED_MAP_CAPACITY 131072

/* peer_value.flags: this socket's direction left the redirect path for good (peer miss, or the
 * egress bound in the budget map). */
#define SPLICED_PEER_DEMOTED 0x1u

/* Value of the peer map, keyed by the receiving socket's cookie. */
struct spliced_peer_value {
	__u64 peer_cookie;      /* cookie of the socket its skbs are redirected to */
	__u64 flags;            /* SPLICED_PEER_*; 64-bit so the verdict can set it atomically */
	__u64 redirected_bytes; /* bytes this socket received that went straight to the peer */
	__u64 redirected_packets; /* skbs of them: what `auto` tells a chatty pair from an idle one by */
};

/* Slots of the per-CPU counter array. */
enum spliced_counter {
	SPLICED_CNT_REDIRECT_PACKETS = 0,
	SPLICED_CNT_REDIRECT_BYTES,
	SPLICED_CNT_PEER_MISS,       /* redirect target missing: direction demoted to userspace */
	SPLICED_CNT_NO_PEER_ENTRY,   /* skb from a socket with no peer-map entry: passed */
	SPLICED_CNT_DROP_EMPTY,      /* zero-length skb (FIN): dropped, never redirected or passed */
	SPLICED_CNT_PASS_DEMOTED,    /* skb of an already demoted direction: passed */
	SPLICED_CNT_EGRESS_DEMOTED,  /* direction demoted: its peer fell too far behind (budget map) */
	SPLICED_CNT_MAX,
};

#ifdef __cplusplus
static_assert(sizeof(struct spliced_peer_value) == 32, "peer value ABI");
#else
_Static_assert(sizeof(struct spliced_peer_value) == 32, "peer value ABI");
#endif

#endif
