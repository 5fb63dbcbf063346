// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * cni-lab's Cilium-style datapath: the tc programs of the `ebpf` data plane.
 *
 * Written for cni-lab after Cilium's bpf/ (bpf_lxc.c, bpf_host.c, bpf_overlay.c); not Cilium's
 * code. The names are Cilium's, the shape is much smaller:
 *
 *   cil_from_container  tc ingress of every pod's lxc device (what the pod sends)
 *   cil_from_netdev     tc ingress of the node's eth0 (native routing: pod traffic from other nodes)
 *   cil_from_overlay    tc ingress of cilium_vxlan (tunnel mode: decapsulated pod traffic)
 *   cil_from_host       tc egress of cilium_host (what the node's own stack sends to pods)
 *
 * Maps (one set per node, pinned under /sys/fs/bpf/cnilab-<lab>/<node>/):
 *   cilium_lxc         pod IP -> its lxc ifindex, the pod's MAC, the lxc MAC (Cilium's endpoints map)
 *   cilium_tunnel_map  pod CIDR -> node IP (tunnel mode; an LPM trie here, Cilium keys it by prefix)
 *   node_config        what Cilium compiles into node_config.h: eth0 and cilium_vxlan ifindexes,
 *                      the router IP, the VNI, tunnel or native routing
 *   cilium_metrics     packets per action, what `cni-lab trace` reads before and after a probe
 *
 * Cilium compiles one object per endpoint with its addresses as constants; cni-lab compiles once
 * and puts them in maps, so the object is built once per source version and cached.
 * IPv4 only: IPv6 and everything else is passed to the kernel's stack untouched.
 */
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

/* linux/if_arp.h pulls in libc headers: the fixed part of an ARP header, as there */
struct arphdr {
	__be16 ar_hrd;
	__be16 ar_pro;
	__u8 ar_hln;
	__u8 ar_pln;
	__be16 ar_op;
};

struct endpoint_key {
	__u32 ip4; /* network byte order */
};

struct endpoint_info {
	__u32 ifindex;      /* the lxc device on this node */
	__u8 mac[ETH_ALEN]; /* the pod's eth0 */
	__u8 node_mac[ETH_ALEN]; /* the lxc device: what the pod sees as its router's MAC */
};

struct tunnel_key {
	__u32 prefixlen;
	__u32 ip4;
};

struct tunnel_value {
	__u32 ip4; /* the remote node's underlay address, network byte order */
};

struct node_config {
	__u32 uplink_ifindex;  /* eth0 */
	__u32 vxlan_ifindex;   /* cilium_vxlan, 0 in native routing */
	__u32 router_ip;       /* cilium_host's address, network byte order */
	__u32 vni;
	__u32 tunnel;          /* 1: tunnel mode, 0: native routing */
};

/* What the programs did, one counter per action (cilium_metrics counts by drop/forward reason). */
enum {
	METRIC_LOCAL_DELIVERY = 0, /* bpf_redirect_peer into a pod of this node */
	METRIC_FIB_REDIRECT,       /* bpf_fib_lookup + bpf_redirect out of eth0 */
	METRIC_FIB_NEIGH,          /* bpf_fib_lookup, then bpf_redirect_neigh (neighbour unresolved) */
	METRIC_TUNNEL,             /* bpf_skb_set_tunnel_key + bpf_redirect to cilium_vxlan */
	METRIC_TO_STACK,           /* TC_ACT_OK: handed to the node's stack */
	METRIC_ARP_REPLY,          /* answered a pod's ARP for the router IP */
	METRIC_DROP,
	METRIC_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct endpoint_key);
	__type(value, struct endpoint_info);
} cilium_lxc SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct tunnel_key);
	__type(value, struct tunnel_value);
} cilium_tunnel_map SEC(".maps");

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

static __always_inline void count(__u32 metric)
{
	__u64 *value = bpf_map_lookup_elem(&cilium_metrics, &metric);

	if (value)
		__sync_fetch_and_add(value, 1);
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

/* Into a pod of this node: Ethernet addresses as the pod expects them (from its router, the lxc
 * device, to its eth0), then bpf_redirect_peer: the packet appears on the pod's eth0 without
 * passing the node's routing, netfilter or the lxc device's queue (ipv4_local_delivery). */
static __always_inline int local_delivery(struct __sk_buff *skb, struct iphdr *ip, struct endpoint_info *ep)
{
	if (dec_ttl(skb, ip) < 0) {
		count(METRIC_DROP);
		return TC_ACT_SHOT;
	}
	bpf_skb_store_bytes(skb, 0, ep->mac, ETH_ALEN, 0);
	bpf_skb_store_bytes(skb, ETH_ALEN, ep->node_mac, ETH_ALEN, 0);
	count(METRIC_LOCAL_DELIVERY);
	return bpf_redirect_peer(ep->ifindex, 0);
}

/* To another node through the VXLAN device: the outer destination is the remote node's IP, set
 * as the packet's tunnel key (cilium_vxlan is flow based: it takes the key, not a fixed remote). */
static __always_inline int encap(struct __sk_buff *skb, struct node_config *cfg, struct tunnel_value *tunnel)
{
	struct bpf_tunnel_key key = {};

	key.remote_ipv4 = bpf_ntohl(tunnel->ip4);
	key.tunnel_id = cfg->vni;
	key.tunnel_ttl = 64;
	if (bpf_skb_set_tunnel_key(skb, &key, sizeof(key), BPF_F_ZERO_CSUM_TX) < 0) {
		count(METRIC_DROP);
		return TC_ACT_SHOT;
	}
	count(METRIC_TUNNEL);
	return bpf_redirect(cfg->vxlan_ifindex, 0);
}

static __always_inline struct tunnel_value *tunnel_of(struct node_config *cfg, __u32 daddr)
{
	struct tunnel_key key = { .prefixlen = 32, .ip4 = daddr };

	if (!cfg->tunnel)
		return NULL;
	return bpf_map_lookup_elem(&cilium_tunnel_map, &key);
}

/* Native routing: the node's FIB decides (the routes autoDirectNodeRoutes installs), the program
 * sends the packet straight out of the chosen device (Cilium's fib_redirect). */
static __always_inline int fib_redirect(struct __sk_buff *skb, struct iphdr *ip, struct node_config *cfg)
{
	struct bpf_fib_lookup fib = {};
	int ret;

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
	if (dec_ttl(skb, ip) < 0) {
		count(METRIC_DROP);
		return TC_ACT_SHOT;
	}
	if (ret == BPF_FIB_LKUP_RET_NO_NEIGH) {
		struct bpf_redir_neigh nh = {};

		nh.nh_family = fib.family;
		nh.ipv4_nh = fib.ipv4_dst;
		count(METRIC_FIB_NEIGH);
		return bpf_redirect_neigh(fib.ifindex, &nh, sizeof(nh), 0);
	}
	bpf_skb_store_bytes(skb, 0, fib.dmac, ETH_ALEN, 0);
	bpf_skb_store_bytes(skb, ETH_ALEN, fib.smac, ETH_ALEN, 0);
	count(METRIC_FIB_REDIRECT);
	return bpf_redirect(fib.ifindex, 0);
}

/* The pod asks who has the router IP: answer with the lxc device's MAC and send the reply back
 * out where the request came from (Cilium's arp_respond). */
static __always_inline int arp_respond(struct __sk_buff *skb, struct node_config *cfg)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct arphdr *arp = data + ETH_HLEN;
	__u8 *payload = (void *)(arp + 1); /* sha[6] sip[4] tha[6] tip[4] */
	struct endpoint_info *ep;
	struct endpoint_key key = {};
	__u8 sha[ETH_ALEN];
	__u32 sip, tip;
	__u16 op = bpf_htons(ARPOP_REPLY);

	if ((void *)(payload + 20) > end)
		return TC_ACT_OK;
	if (arp->ar_op != bpf_htons(ARPOP_REQUEST) || arp->ar_pro != bpf_htons(ETH_P_IP) || arp->ar_hln != ETH_ALEN)
		return TC_ACT_OK;
	__builtin_memcpy(sha, payload, ETH_ALEN);
	__builtin_memcpy(&sip, payload + 6, 4);
	__builtin_memcpy(&tip, payload + 16, 4);
	if (tip != cfg->router_ip)
		return TC_ACT_OK;
	key.ip4 = sip;
	ep = bpf_map_lookup_elem(&cilium_lxc, &key);
	if (!ep)
		return TC_ACT_OK;
	/* Ethernet: back to the asker, from the lxc device */
	bpf_skb_store_bytes(skb, 0, sha, ETH_ALEN, 0);
	bpf_skb_store_bytes(skb, ETH_ALEN, ep->node_mac, ETH_ALEN, 0);
	/* ARP: op reply, sender = router IP at the lxc MAC, target = the pod */
	bpf_skb_store_bytes(skb, ETH_HLEN + __builtin_offsetof(struct arphdr, ar_op), &op, 2, 0);
	bpf_skb_store_bytes(skb, ETH_HLEN + sizeof(struct arphdr), ep->node_mac, ETH_ALEN, 0);
	bpf_skb_store_bytes(skb, ETH_HLEN + sizeof(struct arphdr) + 6, &tip, 4, 0);
	bpf_skb_store_bytes(skb, ETH_HLEN + sizeof(struct arphdr) + 10, sha, ETH_ALEN, 0);
	bpf_skb_store_bytes(skb, ETH_HLEN + sizeof(struct arphdr) + 16, &sip, 4, 0);
	count(METRIC_ARP_REPLY);
	return bpf_redirect(skb->ifindex, 0);
}

/* For a pod of this node: deliver it; NULL otherwise. */
static __always_inline struct endpoint_info *local_endpoint(__u32 daddr)
{
	struct endpoint_key key = { .ip4 = daddr };

	return bpf_map_lookup_elem(&cilium_lxc, &key);
}

SEC("tc")
int cil_from_container(struct __sk_buff *skb)
{
	struct node_config *cfg = config();
	struct endpoint_info *ep;
	struct tunnel_value *tunnel;
	struct iphdr *ip;
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if (!cfg || (void *)(eth + 1) > end)
		return TC_ACT_OK;
	if (eth->h_proto == bpf_htons(ETH_P_ARP))
		return arp_respond(skb, cfg);
	ip = ipv4(skb);
	if (!ip)
		return TC_ACT_OK;
	ep = local_endpoint(ip->daddr);
	if (ep)
		return local_delivery(skb, ip, ep);
	tunnel = tunnel_of(cfg, ip->daddr);
	if (tunnel) {
		if (dec_ttl(skb, ip) < 0) {
			count(METRIC_DROP);
			return TC_ACT_SHOT;
		}
		return encap(skb, cfg, tunnel);
	}
	return fib_redirect(skb, ip, cfg);
}

/* Into a pod of this node if the packet is for one; otherwise the node's stack takes it. */
static __always_inline int to_local_pod(struct __sk_buff *skb, int count_miss)
{
	struct endpoint_info *ep;
	struct iphdr *ip = ipv4(skb);

	if (!ip)
		return TC_ACT_OK;
	ep = local_endpoint(ip->daddr);
	if (!ep) {
		if (count_miss)
			count(METRIC_TO_STACK);
		return TC_ACT_OK;
	}
	return local_delivery(skb, ip, ep);
}

/* Pod traffic arriving from other nodes on eth0 (native routing); everything else is the node's
 * own (not counted: the underlay's traffic would drown the pods'). */
SEC("tc")
int cil_from_netdev(struct __sk_buff *skb)
{
	return to_local_pod(skb, 0);
}

/* Decapsulated pod traffic from cilium_vxlan (tunnel mode). A reply to this node's own router IP
 * (the source its stack picks for pods behind cilium_host: a node's ping, kubelet's probes) is
 * the node's: its inner Ethernet header still names the sending node's lxc MAC, so the stack
 * would drop it as another host's; mark it this host's (Cilium rewrites the MAC to cilium_host's
 * and hands it up the same way, bpf_overlay.c). */
SEC("tc")
int cil_from_overlay(struct __sk_buff *skb)
{
	struct node_config *cfg = config();
	struct iphdr *ip = ipv4(skb);

	if (cfg && ip && ip->daddr == cfg->router_ip) {
		bpf_skb_change_type(skb, PACKET_HOST);
		count(METRIC_TO_STACK);
		return TC_ACT_OK;
	}
	return to_local_pod(skb, 1);
}

/* What the node's own stack routes to pods (`<pod CIDR> via <router IP> dev cilium_host`): to a
 * local pod out of its lxc device; in tunnel mode to a remote node's pods through cilium_vxlan. */
SEC("tc")
int cil_from_host(struct __sk_buff *skb)
{
	struct node_config *cfg = config();
	struct endpoint_info *ep;
	struct tunnel_value *tunnel;
	struct iphdr *ip = ipv4(skb);

	if (!cfg || !ip)
		return TC_ACT_OK;
	ep = local_endpoint(ip->daddr);
	if (ep) {
		/* bpf_redirect_peer works from tc ingress only: out of the lxc device, into the pod */
		bpf_skb_store_bytes(skb, 0, ep->mac, ETH_ALEN, 0);
		bpf_skb_store_bytes(skb, ETH_ALEN, ep->node_mac, ETH_ALEN, 0);
		count(METRIC_LOCAL_DELIVERY);
		return bpf_redirect(ep->ifindex, 0);
	}
	tunnel = tunnel_of(cfg, ip->daddr);
	if (tunnel)
		return encap(skb, cfg, tunnel);
	count(METRIC_TO_STACK);
	return TC_ACT_OK;
}

char __license[] SEC("license") = "Dual BSD/GPL";
