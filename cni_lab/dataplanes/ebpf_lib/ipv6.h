// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* cni-lab's ebpf data plane: IPv6, as the programs carry it (bpf/lib/ipv6.h, icmp6.h, fib.h):
 * the pod's neighbour solicitation for its router answered in BPF, hop limits, local delivery,
 * connection tracking and policy (the same maps), the tunnel. Services and masquerade are IPv4's. */
#pragma once
#include <linux/ipv6.h>
#include "eps.h"
#include "policy.h"

#define AF_INET6 10
#define ICMP6_NS 135
#define ICMP6_NA 136
#define ND_OPT_SOURCE_LL 1
#define ND_OPT_TARGET_LL 2
#define NDP_LEN 32 /* a solicitation or an advertisement with one link-layer address option */
#define IP6_HOPLIMIT_OFF (ETH_HLEN + __builtin_offsetof(struct ipv6hdr, hop_limit))

/* The IPv6 header of an Ethernet frame, or NULL. */
static __always_inline struct ipv6hdr *ipv6(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct ipv6hdr *ip6 = data + ETH_HLEN;

	if ((void *)(ip6 + 1) > end || eth->h_proto != bpf_htons(ETH_P_IPV6))
		return NULL;
	return ip6;
}

/* A router forwards: hop limit - 1 (no header checksum in IPv6). -1: it ran out (Cilium answers
 * with ICMPv6 time exceeded; the lab drops). */
static __always_inline int dec_hop_limit(struct __sk_buff *skb, struct ipv6hdr *ip6)
{
	__u8 hops = ip6->hop_limit;

	if (hops <= 1)
		return -1;
	hops--;
	bpf_skb_store_bytes(skb, IP6_HOPLIMIT_OFF, &hops, 1, 0);
	return 0;
}

/* Two IPv6 addresses equal? (clang does not inline memcmp for BPF) */
static __always_inline int ipv6_equal(const void *a, const void *b)
{
	const __u32 *x = a, *y = b;

	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3];
}

static __always_inline __u16 csum_fold(__s64 sum)
{
	__u32 folded = (__u32)sum;

	folded = (folded & 0xffff) + (folded >> 16);
	folded = (folded & 0xffff) + (folded >> 16);
	return (__u16)~folded;
}

/* The pod's neighbour solicitation for its router IP: answered with the lxc device's MAC, as a
 * router (icmp6_handle_ns: R and S set), from the router IP back to the pod. The reply replaces
 * the request in place (both are 32 bytes with one link-layer address option) and goes back out
 * where it came from. Anything else (another target, no option) is passed on. */
static __always_inline int ndp_respond(struct __sk_buff *skb, struct node_config *cfg)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ipv6hdr *ip6 = data + ETH_HLEN;
	__u8 *icmp = (void *)(ip6 + 1);
	struct endpoint_info *ep;
	struct ipv6hdr reply;
	__u8 msg[NDP_LEN] = {};
	__u8 pseudo[40] = {};
	__u8 pod_mac[ETH_ALEN];
	__s64 sum;
	__u16 csum;

	if ((void *)(icmp + NDP_LEN) > end || ip6->payload_len != bpf_htons(NDP_LEN))
		return TC_ACT_OK;
	if (icmp[0] != ICMP6_NS || icmp[24] != ND_OPT_SOURCE_LL || icmp[25] != 1)
		return TC_ACT_OK;
	if (!ipv6_equal(icmp + 8, cfg->router_ip6))
		return TC_ACT_OK;
	ep = local_endpoint6(ip6->saddr.in6_u.u6_addr8);
	if (!ep)
		return TC_ACT_OK;
	__builtin_memcpy(pod_mac, icmp + 26, ETH_ALEN);
	reply = *ip6;
	__builtin_memcpy(&reply.daddr, &ip6->saddr, 16);
	__builtin_memcpy(&reply.saddr, cfg->router_ip6, 16);
	reply.hop_limit = 255;
	/* the advertisement: type, code, checksum (below), R|S, the target, the target's MAC */
	msg[0] = ICMP6_NA;
	msg[4] = 0xc0;
	__builtin_memcpy(msg + 8, cfg->router_ip6, 16);
	msg[24] = ND_OPT_TARGET_LL;
	msg[25] = 1;
	__builtin_memcpy(msg + 26, ep->node_mac, ETH_ALEN);
	/* its checksum covers the pseudo-header: source, destination, length, next header */
	__builtin_memcpy(pseudo, &reply.saddr, 16);
	__builtin_memcpy(pseudo + 16, &reply.daddr, 16);
	pseudo[35] = NDP_LEN;
	pseudo[39] = IPPROTO_ICMPV6;
	sum = bpf_csum_diff(0, 0, (__be32 *)pseudo, sizeof(pseudo), 0);
	sum = bpf_csum_diff(0, 0, (__be32 *)msg, sizeof(msg), (__u32)sum);
	csum = csum_fold(sum);
	__builtin_memcpy(msg + 2, &csum, 2);
	bpf_skb_store_bytes(skb, ETH_HLEN, &reply, sizeof(reply), 0);
	bpf_skb_store_bytes(skb, ETH_HLEN + sizeof(reply), msg, sizeof(msg), 0);
	bpf_skb_store_bytes(skb, 0, pod_mac, ETH_ALEN, 0);
	bpf_skb_store_bytes(skb, ETH_ALEN, ep->node_mac, ETH_ALEN, 0);
	count(METRIC_ARP_REPLY);
	return bpf_redirect(skb->ifindex, 0);
}

/* -- connection tracking and policy over IPv6 (the same policy maps: identities have no family) -- */

#define ICMP6_ECHO_REQUEST 128
#define ICMP6_ECHO_REPLY 129

struct ipv6_ct_tuple {
	__u8 daddr[16];
	__u8 saddr[16];
	__be16 dport;
	__be16 sport;
	__u8 nexthdr;
	__u8 flags;
} __attribute__((packed));

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ipv6_ct_tuple);
	__type(value, struct ct_entry);
} cilium_ct6_global SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ipv6_ct_tuple);
	__type(value, struct ct_entry);
} cilium_ct_any6_global SEC(".maps");

static __always_inline void *ct_map6(__u8 nexthdr)
{
	if (nexthdr == IPPROTO_TCP)
		return &cilium_ct6_global;
	return &cilium_ct_any6_global;
}

/* An IPv6 packet's tuple (no extension headers: the next header is the transport; an echo's id
 * is its port, as for IPv4). -1: not IPv6, or truncated. */
static __always_inline int parse6(struct __sk_buff *skb, struct ipv6_ct_tuple *t)
{
	struct ipv6hdr ip6;
	__u32 l4 = ETH_HLEN + sizeof(struct ipv6hdr);

	if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6)) < 0)
		return -1;
	__builtin_memcpy(t->daddr, &ip6.daddr, 16);
	__builtin_memcpy(t->saddr, &ip6.saddr, 16);
	t->nexthdr = ip6.nexthdr;
	t->dport = 0;
	t->sport = 0;
	t->flags = 0;
	if (ip6.nexthdr == IPPROTO_TCP || ip6.nexthdr == IPPROTO_UDP || ip6.nexthdr == IPPROTO_SCTP) {
		__be16 ports[2];

		if (bpf_skb_load_bytes(skb, l4, ports, sizeof(ports)) < 0)
			return -1;
		t->sport = ports[0];
		t->dport = ports[1];
	} else if (ip6.nexthdr == IPPROTO_ICMPV6) {
		__u8 icmp[8];
		__be16 id;

		if (bpf_skb_load_bytes(skb, l4, icmp, sizeof(icmp)) < 0)
			return -1;
		__builtin_memcpy(&id, icmp + 4, 2);
		if (icmp[0] == ICMP6_ECHO_REQUEST)
			t->sport = id;
		else if (icmp[0] == ICMP6_ECHO_REPLY)
			t->dport = id;
	}
	return 0;
}

/* ct_state for IPv6: a reply of a connection tracked the other way, established, or new. */
static __always_inline int ct_state6(struct ipv6_ct_tuple *t, __u8 dir)
{
	struct ipv6_ct_tuple key = *t;
	struct ipv6_ct_tuple reverse = {};

	__builtin_memcpy(reverse.daddr, t->saddr, 16);
	__builtin_memcpy(reverse.saddr, t->daddr, 16);
	reverse.dport = t->sport;
	reverse.sport = t->dport;
	reverse.nexthdr = t->nexthdr;
	reverse.flags = dir == TUPLE_F_OUT ? TUPLE_F_IN : TUPLE_F_OUT;
	if (bpf_map_lookup_elem(ct_map6(reverse.nexthdr), &reverse))
		return CT_REPLY;
	key.flags = dir;
	if (bpf_map_lookup_elem(ct_map6(key.nexthdr), &key))
		return CT_ESTABLISHED;
	return CT_NEW;
}

static __always_inline void ct_create6(struct __sk_buff *skb, struct ipv6_ct_tuple *t, __u8 dir, __u32 identity)
{
	struct ipv6_ct_tuple key = *t;
	struct ct_entry entry = {};

	key.flags = dir;
	entry.packets = 1;
	entry.bytes = skb->len;
	entry.src_sec_id = identity;
	entry.lifetime = now_seconds() + (t->nexthdr == IPPROTO_TCP ? CT_CONNECTION_LIFETIME_TCP
								    : CT_CONNECTION_LIFETIME_NONTCP);
	bpf_map_update_elem(ct_map6(key.nexthdr), &key, &entry, BPF_NOEXIST);
}

/* The identity an IPv6 address has for this node. */
static __always_inline __u32 identity_of6(const __u8 *addr)
{
	struct remote_endpoint_info *info = ipcache_lookup6(addr);

	return info ? info->sec_identity : WORLD_ID;
}

/* Policy over IPv6 (what is not a reply), the connection tracked when new. 0: go on. */
static __always_inline int policy_enforce6(struct __sk_buff *skb, struct ipv6_ct_tuple *t, struct endpoint_info *ep,
					   __u32 identity, int egress)
{
	int state = ct_state6(t, egress ? TUPLE_F_OUT : TUPLE_F_IN);
	__be16 dport = t->nexthdr == IPPROTO_ICMPV6 ? 0 : t->dport;

	if (state == CT_REPLY)
		return 0;
	if (policy_verdict(skb, t->nexthdr, dport, 1, ep, identity, egress, state))
		return TC_ACT_SHOT;
	if (state == CT_NEW)
		ct_create6(skb, t, egress ? TUPLE_F_OUT : TUPLE_F_IN, egress ? ep->sec_id : identity);
	return 0;
}

/* Into a pod of this node (ipv6_local_delivery): its ingress policy for the sender's identity
 * (`identity`, from the tunnel; 0: the ipcache's), hop limit, Ethernet addresses, bpf_redirect_peer. */
static __always_inline int local_delivery6(struct __sk_buff *skb, struct endpoint_info *ep, __u32 identity)
{
	struct ipv6_ct_tuple t = {};
	struct ipv6hdr *ip6;

	if (parse6(skb, &t) == 0 &&
	    policy_enforce6(skb, &t, ep, identity ? identity : identity_of6(t.saddr), 0))
		return TC_ACT_SHOT;
	ip6 = ipv6(skb);

	if (!ip6)
		return TC_ACT_OK;
	if (dec_hop_limit(skb, ip6) < 0)
		return drop(METRIC_DROP);
	bpf_skb_store_bytes(skb, 0, ep->mac, ETH_ALEN, 0);
	bpf_skb_store_bytes(skb, ETH_ALEN, ep->node_mac, ETH_ALEN, 0);
	count(METRIC_LOCAL_DELIVERY);
	return bpf_redirect_peer(ep->ifindex, 0);
}
