// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* cni-lab's ebpf data plane: forwarding as a router, by the node's FIB (bpf/lib/fib.h, l3.h) */
#pragma once
#include "ipv6.h"

/* A router forwards: TTL - 1, checksum fixed (Cilium's ipv4_dec_ttl). Returns -1 when it ran out. */
static __always_inline int dec_ttl(struct __sk_buff *skb, struct iphdr *ip)
{
	__u8 ttl = ip->ttl;
	__u8 new_ttl = ttl - 1;

	if (ttl <= 1)
		return -1;
	/* the checksum covers TTL and protocol as one 16-bit word */
	bpf_l3_csum_replace(skb, IP_CSUM_OFF, bpf_htons((__u16)ttl << 8), bpf_htons((__u16)new_ttl << 8), 2);
	bpf_skb_store_bytes(skb, IP_TTL_OFF, &new_ttl, 1, 0);
	return 0;
}

/* After the lookup: the next hop's MAC known, set the Ethernet addresses and bpf_redirect; not
 * yet resolved, bpf_redirect_neigh, which resolves it (either family). */
static __always_inline int fib_send(struct __sk_buff *skb, struct bpf_fib_lookup *fib, int ret)
{
	if (ret == BPF_FIB_LKUP_RET_NO_NEIGH) {
		struct bpf_redir_neigh nh = {};

		nh.nh_family = fib->family;
		if (fib->family == AF_INET6)
			__builtin_memcpy(nh.ipv6_nh, fib->ipv6_dst, 16);
		else
			nh.ipv4_nh = fib->ipv4_dst;
		count(METRIC_FIB_NEIGH);
		return bpf_redirect_neigh(fib->ifindex, &nh, sizeof(nh), 0);
	}
	bpf_skb_store_bytes(skb, 0, fib->dmac, ETH_ALEN, 0);
	bpf_skb_store_bytes(skb, ETH_ALEN, fib->smac, ETH_ALEN, 0);
	count(METRIC_FIB_REDIRECT);
	return bpf_redirect(fib->ifindex, 0);
}

/* The node's FIB decides (the routes autoDirectNodeRoutes installs, the default route), the
 * program sends the packet straight out of the chosen device (Cilium's fib_redirect). */
static __always_inline int fib_redirect(struct __sk_buff *skb, struct node_config *cfg)
{
	struct bpf_fib_lookup fib = {};
	struct iphdr *ip = ipv4(skb);
	int ret;

	if (!ip)
		return TC_ACT_OK;
	fib.family = AF_INET;
	fib.ifindex = cfg->uplink_ifindex; /* looked up as the node would route it (see ebpf.py) */
	fib.ipv4_src = ip->saddr;
	fib.ipv4_dst = ip->daddr;
	fib.tos = ip->tos;
	fib.l4_protocol = ip->protocol;
	/* tot_len stays 0: no MTU check here. A TCP stream's GSO packets are far larger than the
	 * MTU and are cut to size on the way out; the pod's own route MTU bounds the rest. */

	ret = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if (ret != BPF_FIB_LKUP_RET_SUCCESS && ret != BPF_FIB_LKUP_RET_NO_NEIGH) {
		/* for this node itself (not forwarded), or no route: the stack answers */
		count(METRIC_TO_STACK);
		return TC_ACT_OK;
	}
	ip = ipv4(skb);
	if (!ip)
		return TC_ACT_OK;
	if (dec_ttl(skb, ip) < 0)
		return drop(METRIC_DROP);
	return fib_send(skb, &fib, ret);
}

/* The node's FIB decides (fib_redirect_v6), the program sends the packet out of the device chosen. */
static __always_inline int fib_redirect6(struct __sk_buff *skb, struct node_config *cfg)
{
	struct bpf_fib_lookup fib = {};
	struct ipv6hdr *ip6 = ipv6(skb);
	int ret;

	if (!ip6)
		return TC_ACT_OK;
	fib.family = AF_INET6;
	fib.ifindex = cfg->uplink_ifindex;
	fib.l4_protocol = ip6->nexthdr;
	__builtin_memcpy(fib.ipv6_src, &ip6->saddr, 16);
	__builtin_memcpy(fib.ipv6_dst, &ip6->daddr, 16);
	ret = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if (ret != BPF_FIB_LKUP_RET_SUCCESS && ret != BPF_FIB_LKUP_RET_NO_NEIGH) {
		count(METRIC_TO_STACK);
		return TC_ACT_OK;
	}
	ip6 = ipv6(skb);
	if (!ip6)
		return TC_ACT_OK;
	if (dec_hop_limit(skb, ip6) < 0)
		return drop(METRIC_DROP);
	return fib_send(skb, &fib, ret);
}
