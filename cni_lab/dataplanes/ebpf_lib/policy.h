// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* cni-lab's ebpf data plane: NetworkPolicy by identity, each endpoint's policy map (bpf/lib/policy.h) */
#pragma once
#include "conntrack.h"
#include "eps.h"
#include "events.h"

/* struct policy_key's prefix: 40 bits (sec_label, the direction byte) always, then the protocol
 * (8) and the port (16), which an entry may leave out (its lpm_prefix_length) */
#define POLICY_FULL_PREFIX 64
#define POLICY_MAP_SIZE 16384

enum {
	CT_NEW,
	CT_ESTABLISHED,
	CT_REPLY,
};

struct policy_key {
	__u32 prefixlen; /* struct bpf_lpm_trie_key */
	__u32 sec_label; /* the other end's identity, 0: any */
	__u8 egress:1,
	     pad:7;
	__u8 protocol; /* can be wildcarded if 'dport' is fully wildcarded */
	__be16 dport;  /* can be wildcarded with CIDR-like prefix */
};

struct policy_entry {
	__be16 proxy_port;
	__u8 deny:1,
	     reserved:2,
	     lpm_prefix_length:5; /* map key protocol and dport prefix length */
	__u8 auth_type:7,
	     has_explicit_auth_type:1;
	__u32 precedence;
	__u32 cookie;
};

/* One endpoint's map, as the agent pins it: cilium_policy_v2_<endpoint id>. */
struct policy_map {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, POLICY_MAP_SIZE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(key_size, sizeof(struct policy_key)); /* sizes, not BTF types: clang leaves a struct */
	__uint(value_size, sizeof(struct policy_entry)); /* reached only through this template a stub */
};

/* Cilium compiles each endpoint's own map into that endpoint's program (its loader renames the
 * object's cilium_policy_v2 to cilium_policy_v2_<id>); the lab's one object per node finds it by
 * endpoint ID in this map of maps, which carries the name the object gives it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__array(values, struct policy_map);
} cilium_policy_v2 SEC(".maps");

/* Where a packet stands in its connection, seen from the endpoint it leaves (TUPLE_F_OUT) or
 * enters (TUPLE_F_IN): a reply of a connection tracked the other way, an established one, or new. */
static __always_inline int ct_state(struct packet *p, __u8 dir)
{
	struct ipv4_ct_tuple key = p->tuple;
	struct ipv4_ct_tuple reverse = {
		.daddr = p->tuple.saddr,
		.saddr = p->tuple.daddr,
		.dport = p->tuple.sport,
		.sport = p->tuple.dport,
		.nexthdr = p->tuple.nexthdr,
		.flags = dir == TUPLE_F_OUT ? TUPLE_F_IN : TUPLE_F_OUT,
	};

	if (bpf_map_lookup_elem(ct_map(reverse.nexthdr), &reverse))
		return CT_REPLY;
	key.flags = dir;
	if (bpf_map_lookup_elem(ct_map(key.nexthdr), &key))
		return CT_ESTABLISHED;
	return CT_NEW;
}

/* A new connection, tracked so that its replies pass (ct_create4) */
static __always_inline void ct_create(struct __sk_buff *skb, struct packet *p, __u8 dir, __u32 src_identity)
{
	struct ipv4_ct_tuple key = p->tuple;
	struct ct_entry entry = {};

	key.flags = dir;
	entry.packets = 1;
	entry.bytes = skb->len;
	entry.src_sec_id = src_identity;
	entry.lifetime = now_seconds() + (p->tuple.nexthdr == IPPROTO_TCP ? CT_CONNECTION_LIFETIME_TCP
									   : CT_CONNECTION_LIFETIME_NONTCP);
	bpf_map_update_elem(ct_map(key.nexthdr), &key, &entry, BPF_NOEXIST);
}

/* The identity an address has for this node: its ipcache entry's, world when it has none. */
static __always_inline __u32 identity_of(__u32 addr)
{
	struct remote_endpoint_info *info = ipcache_lookup4(addr);

	return info ? info->sec_identity : WORLD_ID;
}

/* May this endpoint talk to `identity` (egress) or hear from it (ingress) on this protocol and
 * port? The exact identity first, then any (0), as __policy_can_access looks them up; a match
 * that is not a deny allows. An endpoint without a map (not written yet) allows everything. */
static __always_inline int policy_can_access(__u16 lxc_id, __u32 identity, int egress, __u8 proto, __be16 dport)
{
	__u32 id = lxc_id;
	void *map = bpf_map_lookup_elem(&cilium_policy_v2, &id);
	struct policy_key key = {
		.prefixlen = POLICY_FULL_PREFIX,
		.sec_label = identity,
		.egress = egress,
		.protocol = proto,
		.dport = dport,
	};
	struct policy_entry *entry;

	if (!map)
		return 1;
	entry = bpf_map_lookup_elem(map, &key);
	if (entry && !entry->deny)
		return 1;
	key.sec_label = 0;
	entry = bpf_map_lookup_elem(map, &key);
	return entry && !entry->deny;
}

/* The verdict on a packet (either family) that is not a reply, and its verdict event for a new
 * connection. 0: allowed; TC_ACT_SHOT: denied, counted and reported. */
static __always_inline int policy_verdict(struct __sk_buff *skb, __u8 proto, __be16 dport, int ipv6,
					  struct endpoint_info *ep, __u32 identity, int egress, int state)
{
	int allowed = policy_can_access(ep->lxc_id, identity, egress, proto, dport);

	if (state == CT_NEW)
		send_policy_verdict(skb, proto, dport, ipv6, ep->lxc_id, identity, egress, allowed);
	if (!allowed) {
		count(METRIC_DROP_POLICY);
		send_drop_notify(skb, egress ? ep->sec_id : identity, egress ? identity : ep->sec_id, ep->lxc_id,
				 DROP_POLICY, ep->ifindex);
		return TC_ACT_SHOT;
	}
	return 0;
}

/* IPv4: the verdict, and the connection tracked when it is allowed and new. */
static __always_inline int policy_enforce(struct __sk_buff *skb, struct packet *p, struct endpoint_info *ep,
					  __u32 identity, int egress, int state)
{
	__be16 dport = p->tuple.nexthdr == IPPROTO_ICMP ? 0 : p->tuple.dport;

	if (policy_verdict(skb, p->tuple.nexthdr, dport, 0, ep, identity, egress, state))
		return TC_ACT_SHOT;
	if (state == CT_NEW)
		ct_create(skb, p, egress ? TUPLE_F_OUT : TUPLE_F_IN, egress ? ep->sec_id : identity);
	return 0;
}
