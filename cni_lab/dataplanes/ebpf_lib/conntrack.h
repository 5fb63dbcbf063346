// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* cni-lab's ebpf data plane: connection tracking, much reduced (bpf/lib/conntrack.h, conntrack_map.h) */
#pragma once
#include "common.h"

#define CT_CONNECTION_LIFETIME_TCP 21600
#define CT_CONNECTION_LIFETIME_NONTCP 60

struct ct_entry {
	__u64 reserved0;
	__u64 backend_id;
	__u64 packets;
	__u64 bytes;
	__u32 lifetime;
	__u16 rx_closing:1,
	      tx_closing:1,
	      reserved1:1,
	      lb_loopback:1,
	      seen_non_syn:1,
	      node_port:1,
	      proxy_redirect:1,
	      dsr_internal:1,
	      from_l7lb:1,
	      reserved2:1,
	      from_tunnel:1,
	      reserved3:5;
	__u16 rev_nat_index;
	__be16 nat_port;
	__u8 tx_flags_seen;
	__u8 rx_flags_seen;
	__u32 src_sec_id;
	__u32 last_tx_report;
	__u32 last_rx_report;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ipv4_ct_tuple);
	__type(value, struct ct_entry);
} cilium_ct4_global SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ipv4_ct_tuple);
	__type(value, struct ct_entry);
} cilium_ct_any4_global SEC(".maps");

static __always_inline __u32 now_seconds(void)
{
	return (__u32)(bpf_ktime_get_ns() / 1000000000ULL);
}

/* TCP connections in cilium_ct4_global, the rest in cilium_ct_any4_global (get_ct_map4) */
static __always_inline void *ct_map(__u8 nexthdr)
{
	if (nexthdr == IPPROTO_TCP)
		return &cilium_ct4_global;
	return &cilium_ct_any4_global;
}

/* The connection a reply belongs to: its tuple turned around, as the first packet had it. */
static __always_inline struct ct_entry *ct_lookup_reply(struct packet *p)
{
	struct ipv4_ct_tuple key = {
		.daddr = p->tuple.saddr,
		.saddr = p->tuple.daddr,
		.dport = p->tuple.sport,
		.sport = p->tuple.dport,
		.nexthdr = p->tuple.nexthdr,
		.flags = TUPLE_F_OUT,
	};
	struct ct_entry *ct = bpf_map_lookup_elem(ct_map(key.nexthdr), &key);

	if (ct)
		__sync_fetch_and_add(&ct->packets, 1);
	return ct;
}

/* Count a packet of a translated connection, making its entry on the first (1: made now). */
static __always_inline int ct_account(struct __sk_buff *skb, struct packet *p, __u8 flags, __u32 backend_id,
				       __u16 rev_nat_index, int loopback, int node_port)
{
	struct ipv4_ct_tuple key = p->tuple;
	struct ct_entry *ct, entry = {};

	key.flags = flags;
	ct = bpf_map_lookup_elem(ct_map(key.nexthdr), &key);
	if (ct) {
		__sync_fetch_and_add(&ct->packets, 1);
		__sync_fetch_and_add(&ct->bytes, skb->len);
		return 0;
	}
	entry.backend_id = backend_id;
	entry.rev_nat_index = rev_nat_index;
	entry.lb_loopback = loopback;
	entry.node_port = node_port;
	entry.packets = 1;
	entry.bytes = skb->len;
	entry.lifetime = now_seconds() + (p->tuple.nexthdr == IPPROTO_TCP ? CT_CONNECTION_LIFETIME_TCP
									   : CT_CONNECTION_LIFETIME_NONTCP);
	bpf_map_update_elem(ct_map(key.nexthdr), &key, &entry, BPF_ANY);
	return 1;
}

