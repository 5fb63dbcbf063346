// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* cni-lab's ebpf data plane: BPF masquerade: SNAT to the node and back (bpf/lib/nat.h) */
#pragma once
#include "eps.h"

/* SNAT ports (NODEPORT_PORT_MIN_NAT, NODEPORT_PORT_MAX_NAT) and tries on a collision */
#define NAT_MIN_PORT 32768
#define NAT_MAX_PORT 65535
#define SNAT_COLLISION_RETRIES 16


struct nat_entry {
	__u64 created;
	__u64 needs_ct;
	__u64 pad1;
	__u64 pad2;
};

struct ipv4_nat_entry {
	struct nat_entry common;
	__be32 to_addr; /* to_saddr (an OUT entry), to_daddr (an IN entry) */
	__be16 to_port;
	__u16 pad;
};


struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ipv4_ct_tuple);
	__type(value, struct ipv4_nat_entry);
} cilium_snat_v4_external SEC(".maps");


/* Whether a pod's packet leaves the cluster and so takes the node's address (snat_v4_needs_masquerade):
 * not to the native-routing CIDR, not to an address the ipcache knows as a node or a pod (with
 * enable-remote-node-masquerade off, its default), only from a pod of this node. */
static __always_inline int needs_masquerade(struct node_config *cfg, struct packet *p, struct remote_endpoint_info *info)
{
	if (!cfg->masquerade || !local_endpoint(p->tuple.saddr))
		return 0;
	if ((p->tuple.daddr & cfg->native_mask) == cfg->native_cidr)
		return 0;
	/* the world: no entry, reserved:world, or a policy's CIDR prefix (a local-scope identity, 1 << 24) */
	return !info || info->sec_identity == WORLD_ID || (info->sec_identity >> 24) == 1;
}

/* The connection's source becomes `addr` (the node's) and a port of the node's (the one it had
 * when that is in range and free; an ICMP echo's id is not clamped), both directions recorded in
 * cilium_snat_v4_external: OUT (the original tuple -> the new source), IN (the reply's tuple ->
 * the original source). On a collision a random port, then the next ones (snat_v4_new_mapping).
 * 1: a new mapping was made (the connection's first packet), 0: an existing one used, -1: failed. */
static __always_inline int snat_v4(struct __sk_buff *skb, struct packet *p, __be32 addr)
{
	struct ipv4_ct_tuple out = p->tuple, in = {};
	struct ipv4_nat_entry *state, fwd = {}, rev = {};
	__u16 port = bpf_ntohs(p->tuple.sport);
	__be32 to_addr;
	__be16 to_port;
	int i, fresh = 0;

	out.flags = TUPLE_F_OUT;
	state = bpf_map_lookup_elem(&cilium_snat_v4_external, &out);
	if (state) {
		to_addr = state->to_addr;
		to_port = state->to_port;
	} else {
		in.daddr = addr;
		in.saddr = p->tuple.daddr;
		in.sport = p->tuple.dport;
		in.nexthdr = p->tuple.nexthdr;
		in.flags = TUPLE_F_IN;
		rev.common.created = now_seconds();
		rev.to_addr = p->tuple.saddr;
		rev.to_port = p->tuple.sport;
		if (p->tuple.nexthdr != IPPROTO_SCTP && p->tuple.nexthdr != IPPROTO_ICMP && port < NAT_MIN_PORT)
			port = NAT_MIN_PORT + port % (NAT_MAX_PORT - NAT_MIN_PORT + 1);
#pragma unroll
		for (i = 0; i < SNAT_COLLISION_RETRIES; i++) {
			in.dport = bpf_htons(port);
			if (bpf_map_update_elem(&cilium_snat_v4_external, &in, &rev, BPF_NOEXIST) == 0)
				break;
			if (p->tuple.nexthdr == IPPROTO_SCTP)
				i = SNAT_COLLISION_RETRIES; /* its CRC covers the port: keep it or give up */
			else if (p->tuple.nexthdr == IPPROTO_ICMP)
				port = (i ? port + 1 : bpf_get_prandom_u32()) & 0xffff;
			else
				port = NAT_MIN_PORT + (i ? port + 1 - NAT_MIN_PORT : bpf_get_prandom_u32()) %
					(NAT_MAX_PORT - NAT_MIN_PORT + 1);
		}
		if (i >= SNAT_COLLISION_RETRIES)
			return -1;
		to_addr = addr;
		to_port = bpf_htons(port);
		fresh = 1;
		fwd.common.created = rev.common.created;
		fwd.to_addr = to_addr;
		fwd.to_port = to_port;
		bpf_map_update_elem(&cilium_snat_v4_external, &out, &fwd, BPF_ANY);
	}
	if (rewrite4(skb, p, 1, to_addr, to_port) < 0)
		return -1;
	count(METRIC_SNAT);
	return fresh;
}

/* A reply to the node's address: to the connection's original source when the node SNATed it
 * (1), or not one of those (0). */
static __always_inline int snat_v4_rev(struct __sk_buff *skb, struct packet *p)
{
	struct ipv4_ct_tuple in = p->tuple;
	struct ipv4_nat_entry *state;

	in.flags = TUPLE_F_IN;
	state = bpf_map_lookup_elem(&cilium_snat_v4_external, &in);
	if (!state)
		return 0;
	if (rewrite4(skb, p, 0, state->to_addr, state->to_port) < 0)
		return -1;
	count(METRIC_REV_SNAT);
	return 1;
}

