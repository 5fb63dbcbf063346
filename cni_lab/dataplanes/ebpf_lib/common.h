// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* cni-lab's ebpf data plane: what every part shares: headers, reserved identities, the endpoints map, node_config,
 * cilium_metrics, a packet's tuple and the rewrite that NATs it (Cilium: bpf/lib/common.h, eps.h, csum.h) */
#pragma once
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define AF_INET 2
#define ARPOP_REQUEST 1
#define ARPOP_REPLY 2
#define ICMP_ECHOREPLY 0
#define ICMP_ECHO 8

/* Reserved security identities (pkg/identity/numericidentity.go) */
#define HOST_ID 1
#define WORLD_ID 2
#define REMOTE_NODE_ID 6

/* linux/if_arp.h pulls in libc headers: the fixed part of an ARP header, as there */
struct arphdr {
	__be16 ar_hrd;
	__be16 ar_pro;
	__u8 ar_hln;
	__u8 ar_pln;
	__be16 ar_op;
};

/* bpf/lib/eps.h: a pod of this node by its address, either family */
struct endpoint_key {
	union {
		struct {
			__u32 ip4; /* network byte order */
			__u32 pad1;
			__u32 pad2;
			__u32 pad3;
		};
		__u8 ip6[16];
	};
	__u8 family; /* ENDPOINT_KEY_IPV4 1, ENDPOINT_KEY_IPV6 2 */
	__u8 key;
	__u16 cluster_id;
};

#define ENDPOINT_KEY_IPV4 1
#define ENDPOINT_KEY_IPV6 2

struct endpoint_info {
	__u32 ifindex;      /* the lxc device on this node */
	__u8 mac[ETH_ALEN]; /* the pod's eth0 */
	__u8 node_mac[ETH_ALEN]; /* the lxc device: what the pod sees as its router's MAC */
	__u16 lxc_id;       /* the endpoint ID: its policy map is cilium_policy_v2_<lxc_id> */
	__u16 pad;
	__u32 sec_id;       /* its security identity */
};

/* bpf/lib/common.h: connection tracking and NAT share the tuple */
struct ipv4_ct_tuple {
	__be32 daddr;
	__be32 saddr;
	__be16 dport;
	__be16 sport;
	__u8 nexthdr;
	__u8 flags;
} __attribute__((packed));

/* ipv4_ct_tuple.flags (bpf/lib/common.h) */
#define TUPLE_F_OUT 0
#define TUPLE_F_IN 1
#define TUPLE_F_SERVICE 4

struct node_config {
	__u32 uplink_ifindex;  /* eth0 */
	__u32 vxlan_ifindex;   /* cilium_vxlan, 0 in native routing */
	__u32 router_ip;       /* cilium_host's address, network byte order */
	__u32 vni;
	__u32 tunnel;          /* 1: tunnel mode, 0: native routing */
	__u32 node_ip;         /* eth0's address: NodePort frontends, the masquerade source (IPV4_MASQUERADE) */
	__u32 masquerade;      /* 1: bpf.masquerade on (the lab has an outside host and networking.masquerade) */
	__u32 native_cidr;     /* ipv4NativeRoutingCIDR (the cluster CIDR): never masqueraded to */
	__u32 native_mask;
	__u8 router_ip6[16];   /* cilium_host's IPv6 address (dual-stack, IPv6-only labs) */
};

/* What the programs did, one counter per action (cilium_metrics counts by drop/forward reason). */
enum {
	METRIC_LOCAL_DELIVERY = 0, /* bpf_redirect_peer into a pod of this node */
	METRIC_FIB_REDIRECT,       /* bpf_fib_lookup + bpf_redirect out of eth0 */
	METRIC_FIB_NEIGH,          /* bpf_fib_lookup, then bpf_redirect_neigh (neighbour unresolved) */
	METRIC_TUNNEL,             /* bpf_skb_set_tunnel_key + bpf_redirect to cilium_vxlan */
	METRIC_TO_STACK,           /* TC_ACT_OK: handed to the node's stack */
	METRIC_ARP_REPLY,          /* answered a pod's ARP (or IPv6 neighbour solicitation) for the router IP */
	METRIC_DROP,               /* TTL exceeded, a rewrite failed */
	METRIC_LB,                 /* a Service's frontend translated to a backend (DNAT) */
	METRIC_REV_NAT,            /* a reply's source translated back to the Service frontend */
	METRIC_SNAT,               /* masqueraded to the node's address (pod -> world, NodePort) */
	METRIC_REV_SNAT,           /* a reply to a masqueraded connection, back to its client */
	METRIC_DROP_NO_SERVICE,    /* a frontend without a usable backend (DROP_NO_SERVICE) */
	METRIC_DROP_NAT,           /* no SNAT port left (DROP_NAT_NO_MAPPING) */
	METRIC_DROP_POLICY,        /* denied by the endpoint's policy map (DROP_POLICY) */
	METRIC_DROP_IDENTITY,      /* a tunnel packet claiming the host's identity (DROP_INVALID_IDENTITY) */
	METRIC_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct endpoint_key);
	__type(value, struct endpoint_info);
} cilium_lxc SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct node_config);
} node_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, METRIC_MAX);
	__type(key, __u32);
	__type(value, __u64);
} cilium_metrics SEC(".maps");

#define IP_CSUM_OFF (ETH_HLEN + __builtin_offsetof(struct iphdr, check))
#define IP_TTL_OFF (ETH_HLEN + __builtin_offsetof(struct iphdr, ttl))
#define IP_SADDR_OFF (ETH_HLEN + __builtin_offsetof(struct iphdr, saddr))
#define IP_DADDR_OFF (ETH_HLEN + __builtin_offsetof(struct iphdr, daddr))

static __always_inline void count(__u32 metric)
{
	__u64 *value = bpf_map_lookup_elem(&cilium_metrics, &metric);

	if (value)
		__sync_fetch_and_add(value, 1);
}

static __always_inline int drop(__u32 metric)
{
	count(metric);
	return TC_ACT_SHOT;
}

static __always_inline struct node_config *config(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&node_config, &zero);
}

/* The IPv4 header of an Ethernet frame, or NULL (not IPv4, or truncated). */
static __always_inline struct iphdr *ipv4(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + ETH_HLEN;

	if ((void *)(ip + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return NULL;
	return ip;
}

/* -- a packet's tuple ---------------------------------------------------------------------- */

/* What connection tracking, the load balancer and NAT key on: addresses, ports (an ICMP echo's
 * id as the port: the request's source port, the reply's destination port, as Cilium's NAT
 * does), protocol; and where the L4 header starts. */
struct packet {
	struct ipv4_ct_tuple tuple;
	__u32 l4off;
};

static __always_inline int parse(struct __sk_buff *skb, struct packet *p)
{
	struct iphdr ip;

	if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0 || ip.version != 4 || ip.ihl < 5)
		return -1;
	p->tuple.daddr = ip.daddr;
	p->tuple.saddr = ip.saddr;
	p->tuple.dport = 0;
	p->tuple.sport = 0;
	p->tuple.nexthdr = ip.protocol;
	p->tuple.flags = 0;
	p->l4off = ETH_HLEN + ip.ihl * 4;
	if (ip.frag_off & bpf_htons(0x1fff))
		return 0; /* a later fragment: no L4 header */
	if (ip.protocol == IPPROTO_TCP || ip.protocol == IPPROTO_UDP || ip.protocol == IPPROTO_SCTP) {
		__be16 ports[2];

		if (bpf_skb_load_bytes(skb, p->l4off, ports, sizeof(ports)) < 0)
			return -1;
		p->tuple.sport = ports[0];
		p->tuple.dport = ports[1];
	} else if (ip.protocol == IPPROTO_ICMP) {
		__u8 icmp[8];
		__be16 id;

		if (bpf_skb_load_bytes(skb, p->l4off, icmp, sizeof(icmp)) < 0)
			return -1;
		__builtin_memcpy(&id, icmp + 4, 2);
		if (icmp[0] == ICMP_ECHO)
			p->tuple.sport = id;
		else if (icmp[0] == ICMP_ECHOREPLY)
			p->tuple.dport = id;
	}
	return 0;
}

/* Rewrite the source (or destination) address and port, the IP and L4 checksums with them, as
 * Cilium's lb4_xlate and snat_v4_rewrite do. An ICMP echo's "port" is its id; its checksum has
 * no pseudo-header. SCTP's CRC32c has none either, but covers the ports: those are not
 * rewritten (the caller keeps them). */
static __always_inline int rewrite4(struct __sk_buff *skb, struct packet *p, int source, __be32 addr, __be16 port)
{
	__be32 old_addr = source ? p->tuple.saddr : p->tuple.daddr;
	__be16 old_port = source ? p->tuple.sport : p->tuple.dport;
	__u32 csum_off = 0, port_off = 0;
	__u64 mangled = 0;
	__u8 proto = p->tuple.nexthdr;

	if (proto == IPPROTO_TCP) {
		csum_off = p->l4off + 16;
		port_off = p->l4off + (source ? 0 : 2);
	} else if (proto == IPPROTO_UDP) {
		csum_off = p->l4off + 6;
		port_off = p->l4off + (source ? 0 : 2);
		mangled = BPF_F_MARK_MANGLED_0; /* a UDP checksum of 0 means none: left so */
	} else if (proto == IPPROTO_ICMP) {
		port_off = p->l4off + 4;
	}
	if (old_addr != addr) {
		if (csum_off && bpf_l4_csum_replace(skb, csum_off, old_addr, addr, BPF_F_PSEUDO_HDR | mangled | 4) < 0)
			return -1;
		if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, old_addr, addr, 4) < 0)
			return -1;
		if (bpf_skb_store_bytes(skb, source ? IP_SADDR_OFF : IP_DADDR_OFF, &addr, 4, 0) < 0)
			return -1;
	}
	if (old_port != port) {
		if (!port_off)
			return -1;
		if (proto == IPPROTO_ICMP)
			csum_off = p->l4off + 2;
		if (bpf_l4_csum_replace(skb, csum_off, old_port, port, mangled | 2) < 0)
			return -1;
		if (bpf_skb_store_bytes(skb, port_off, &port, 2, 0) < 0)
			return -1;
	}
	if (source) {
		p->tuple.saddr = addr;
		p->tuple.sport = port;
	} else {
		p->tuple.daddr = addr;
		p->tuple.dport = port;
	}
	return 0;
}

/* For a pod of this node: its entry; NULL otherwise. */
static __always_inline struct endpoint_info *local_endpoint(__u32 daddr)
{
	struct endpoint_key key = { .ip4 = daddr, .family = ENDPOINT_KEY_IPV4 };

	return bpf_map_lookup_elem(&cilium_lxc, &key);
}

static __always_inline struct endpoint_info *local_endpoint6(const __u8 *daddr)
{
	struct endpoint_key key = { .family = ENDPOINT_KEY_IPV6 };

	__builtin_memcpy(key.ip6, daddr, 16);
	return bpf_map_lookup_elem(&cilium_lxc, &key);
}

