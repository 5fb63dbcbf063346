// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * cni-lab's Cilium-style datapath: the tc programs of the `ebpf` data plane, as Cilium runs with
 * kubeProxyReplacement: true, bpf.masquerade: true and socket LB off (Services per packet).
 *
 * Written for cni-lab after Cilium's bpf/ (bpf_lxc.c, bpf_host.c, bpf_overlay.c, lib/lb.h,
 * lib/nodeport.h, lib/nat.h, lib/conntrack.h); not Cilium's code. The names and the maps' key and
 * value layouts are Cilium's, the programs are much smaller:
 *
 *   cil_from_container  tc ingress of every pod's lxc device (what the pod sends): ARP for the
 *                       router, Services (lb4: DNAT to a backend), replies of NodePort connections,
 *                       then local delivery, the tunnel, or a FIB lookup (masqueraded to the world)
 *   cil_from_netdev     tc ingress of the node's eth0: NodePort (the node's address), replies to
 *                       what the node masqueraded, and pod traffic from other nodes (native routing)
 *   cil_from_overlay    tc ingress of cilium_vxlan (tunnel mode: decapsulated pod traffic)
 *   cil_from_host       tc egress of cilium_host (what the node's own stack sends to pods)
 *
 * Maps (one set per node, pinned under /sys/fs/bpf/cnilab-<lab>/<node>/):
 *   cilium_lxc               pod IP -> its lxc ifindex, the pod's MAC, the lxc MAC (endpoints map)
 *   cilium_ipcache_v2        prefix -> security identity, tunnel endpoint (LPM; every pod, every
 *                            node, and in tunnel mode other nodes' pod CIDRs): where a remote
 *                            address is and whether it is in the cluster (Cilium's ipcache, which
 *                            also replaced its tunnel map in 2025, cilium/cilium#38839)
 *   cilium_lb4_services_v2   Service frontend (address, port, protocol, slot) -> backend count or
 *                            backend ID; cilium_lb4_backends_v3 backend ID -> address and port;
 *                            cilium_lb4_reverse_nat rev_nat_index -> the frontend, for replies
 *   cilium_ct4_global        connection tracking (TCP; cilium_ct_any4_global the rest): Service
 *                            connections (their backend) and the translated connections' reverse NAT
 *   cilium_snat_v4_external  BPF masquerade: a pod's connection to the world <-> the node's address
 *                            and port; NodePort connections SNATed to a remote backend likewise
 *   node_config              what Cilium compiles into node_config.h: ifindexes, the router IP,
 *                            the node's IP, the VNI, the routing mode, masquerade on or off
 *   cilium_metrics           packets per action, what `cni-lab trace` reads before and after a probe
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
#define ICMP_ECHOREPLY 0
#define ICMP_ECHO 8

/* Reserved security identities (pkg/identity/numericidentity.go) */
#define HOST_ID 1
#define WORLD_ID 2
#define REMOTE_NODE_ID 6

#define ENDPOINT_KEY_IPV4 1 /* ipcache_key.family */
#define IPCACHE_STATIC_PREFIX 32 /* cluster_id, pad1, family: the bits before the address */

/* ipv4_ct_tuple.flags (bpf/lib/common.h) */
#define TUPLE_F_OUT 0
#define TUPLE_F_IN 1
#define TUPLE_F_SERVICE 4

#define LB_LOOKUP_SCOPE_EXT 0

/* The address a pod reaching itself through its Service is seen from (--ipv4-service-loopback-address) */
#define IPV4_LOOPBACK bpf_htonl(0xa9fe2a01) /* 169.254.42.1 */

/* SNAT ports (NODEPORT_PORT_MIN_NAT, NODEPORT_PORT_MAX_NAT) and tries on a collision */
#define NAT_MIN_PORT 32768
#define NAT_MAX_PORT 65535
#define SNAT_COLLISION_RETRIES 16

#define CT_CONNECTION_LIFETIME_TCP 21600
#define CT_CONNECTION_LIFETIME_NONTCP 60

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

/* bpf/lib/eps.h: the LPM key starts with the prefix length, which counts the 32 bits of
 * cluster_id, pad1 and family before the address */
struct ipcache_key {
	__u32 prefixlen;
	__u16 cluster_id;
	__u8 pad1;
	__u8 family;
	__u32 ip4;
	__u32 pad4;
	__u32 pad5;
	__u32 pad6;
} __attribute__((packed));

struct remote_endpoint_info {
	__u32 sec_identity;
	__u32 tunnel_endpoint; /* IPv4, network byte order: the node behind which the prefix lives */
	__u32 pad1;
	__u32 pad2;
	__u32 pad3;
	__u16 pad;
	__u8 key;
	__u8 flag_skip_tunnel:1,
	     flag_has_tunnel_ep:1,
	     flag_ipv6_tunnel_ep:1,
	     flag_remote_cluster:1,
	     pad4:4;
};

/* bpf/lib/common.h: the Service maps */
struct lb4_key {
	__be32 address;     /* Service virtual IPv4 address */
	__be16 dport;       /* L4 port filter */
	__u16 backend_slot; /* backend iterator, 0 indicates the svc frontend */
	__u8 proto;         /* L4 protocol */
	__u8 scope;         /* LB_LOOKUP_SCOPE_* for externalTrafficPolicy=Local */
	__u8 pad[2];
};

struct lb4_service {
	__u32 backend_id;   /* backend ID in lb4_backends (a slot's entry) */
	__u16 count;        /* the frontend: number of backend slots */
	__u16 rev_nat_index; /* reverse NAT ID in lb4_reverse_nat */
	__u8 flags;
	__u8 flags2;
	__u16 qcount;
};

struct lb4_backend {
	__be32 address;
	__be16 port;
	__u8 proto;
	__u8 flags;
	__u16 cluster_id;
	__u8 zone;
	__u8 pad;
};

struct lb4_reverse_nat {
	__be32 address;
	__be16 port;
} __attribute__((packed));

/* bpf/lib/common.h: connection tracking and NAT share the tuple */
struct ipv4_ct_tuple {
	__be32 daddr;
	__be32 saddr;
	__be16 dport;
	__be16 sport;
	__u8 nexthdr;
	__u8 flags;
} __attribute__((packed));

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
};

/* What the programs did, one counter per action (cilium_metrics counts by drop/forward reason). */
enum {
	METRIC_LOCAL_DELIVERY = 0, /* bpf_redirect_peer into a pod of this node */
	METRIC_FIB_REDIRECT,       /* bpf_fib_lookup + bpf_redirect out of eth0 */
	METRIC_FIB_NEIGH,          /* bpf_fib_lookup, then bpf_redirect_neigh (neighbour unresolved) */
	METRIC_TUNNEL,             /* bpf_skb_set_tunnel_key + bpf_redirect to cilium_vxlan */
	METRIC_TO_STACK,           /* TC_ACT_OK: handed to the node's stack */
	METRIC_ARP_REPLY,          /* answered a pod's ARP for the router IP */
	METRIC_DROP,               /* TTL exceeded, a rewrite failed */
	METRIC_LB,                 /* a Service's frontend translated to a backend (DNAT) */
	METRIC_REV_NAT,            /* a reply's source translated back to the Service frontend */
	METRIC_SNAT,               /* masqueraded to the node's address (pod -> world, NodePort) */
	METRIC_REV_SNAT,           /* a reply to a masqueraded connection, back to its client */
	METRIC_DROP_NO_SERVICE,    /* a frontend without a usable backend (DROP_NO_SERVICE) */
	METRIC_DROP_NAT,           /* no SNAT port left (DROP_NAT_NO_MAPPING) */
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
	__type(key, struct ipcache_key);
	__type(value, struct remote_endpoint_info);
} cilium_ipcache_v2 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct lb4_key);
	__type(value, struct lb4_service);
} cilium_lb4_services_v2 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct lb4_backend);
} cilium_lb4_backends_v3 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u16);
	__type(value, struct lb4_reverse_nat);
} cilium_lb4_reverse_nat SEC(".maps");

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

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ipv4_ct_tuple);
	__type(value, struct ipv4_nat_entry);
} cilium_snat_v4_external SEC(".maps");

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

/* -- connection tracking (bpf/lib/conntrack.h, much reduced) --------------------------------- */

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

/* Count a packet of a translated connection, making its entry on the first. */
static __always_inline void ct_account(struct __sk_buff *skb, struct packet *p, __u8 flags, __u32 backend_id,
				       __u16 rev_nat_index, int loopback, int node_port)
{
	struct ipv4_ct_tuple key = p->tuple;
	struct ct_entry *ct, entry = {};

	key.flags = flags;
	ct = bpf_map_lookup_elem(ct_map(key.nexthdr), &key);
	if (ct) {
		__sync_fetch_and_add(&ct->packets, 1);
		__sync_fetch_and_add(&ct->bytes, skb->len);
		return;
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
}

/* -- Services (bpf/lib/lb.h) ------------------------------------------------------------------ */

static __always_inline struct lb4_service *lb4_lookup_service(struct packet *p)
{
	struct lb4_key key = {
		.address = p->tuple.daddr,
		.dport = p->tuple.dport,
		.proto = p->tuple.nexthdr,
		.scope = LB_LOOKUP_SCOPE_EXT,
	};

	if (p->tuple.nexthdr != IPPROTO_TCP && p->tuple.nexthdr != IPPROTO_UDP && p->tuple.nexthdr != IPPROTO_SCTP)
		return NULL;
	return bpf_map_lookup_elem(&cilium_lb4_services_v2, &key);
}

/* The backend of a Service connection: the one its CT_SERVICE entry holds, or a slot chosen at
 * random (bpf-lb-algorithm=random) and remembered there. NULL: none (DROP_NO_SERVICE). */
static __always_inline struct lb4_backend *lb4_select(struct __sk_buff *skb, struct packet *p,
						      struct lb4_service *svc, __u32 *backend_id)
{
	struct ipv4_ct_tuple key = p->tuple;
	struct lb4_key slot_key = {
		.address = p->tuple.daddr,
		.dport = p->tuple.dport,
		.proto = p->tuple.nexthdr,
		.scope = LB_LOOKUP_SCOPE_EXT,
	};
	struct lb4_service *slot;
	struct lb4_backend *backend;
	struct ct_entry *ct;

	key.flags = TUPLE_F_SERVICE;
	ct = bpf_map_lookup_elem(ct_map(key.nexthdr), &key);
	if (ct) {
		*backend_id = (__u32)ct->backend_id;
		backend = bpf_map_lookup_elem(&cilium_lb4_backends_v3, backend_id);
		if (backend) {
			__sync_fetch_and_add(&ct->packets, 1);
			__sync_fetch_and_add(&ct->bytes, skb->len);
			return backend;
		}
	}
	if (!svc->count)
		return NULL;
	slot_key.backend_slot = (bpf_get_prandom_u32() % svc->count) + 1;
	slot = bpf_map_lookup_elem(&cilium_lb4_services_v2, &slot_key);
	if (!slot)
		return NULL;
	*backend_id = slot->backend_id;
	backend = bpf_map_lookup_elem(&cilium_lb4_backends_v3, backend_id);
	if (!backend)
		return NULL; /* the slot names a backend the backends map lacks */
	ct_account(skb, p, TUPLE_F_SERVICE, *backend_id, svc->rev_nat_index, 0, 0);
	return backend;
}

/* A reply's source back to the Service frontend its client dialled (lb4_rev_nat). */
static __always_inline int lb4_rev_nat(struct __sk_buff *skb, struct packet *p, __u16 index)
{
	struct lb4_reverse_nat *rev = bpf_map_lookup_elem(&cilium_lb4_reverse_nat, &index);

	if (!rev)
		return 0;
	if (rewrite4(skb, p, 1, rev->address, rev->port) < 0)
		return -1;
	count(METRIC_REV_NAT);
	return 0;
}

/* -- where an address lives ----------------------------------------------------------------------- */

/* For a pod of this node: its entry; NULL otherwise. */
static __always_inline struct endpoint_info *local_endpoint(__u32 daddr)
{
	struct endpoint_key key = { .ip4 = daddr };

	return bpf_map_lookup_elem(&cilium_lxc, &key);
}

/* The ipcache's longest prefix holding an address: its identity and tunnel endpoint. */
static __always_inline struct remote_endpoint_info *ipcache_lookup4(__u32 addr)
{
	struct ipcache_key key = {
		.prefixlen = IPCACHE_STATIC_PREFIX + 32,
		.family = ENDPOINT_KEY_IPV4,
		.ip4 = addr,
	};

	return bpf_map_lookup_elem(&cilium_ipcache_v2, &key);
}

/* -- forwarding ------------------------------------------------------------------------------------ */

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

/* Into a pod of this node: a reply of a Service connection its pod made gets the frontend back
 * as its source (the client side's reverse NAT, as bpf_lxc's to-container path does); then
 * Ethernet addresses as the pod expects them (from its router, the lxc device, to its eth0),
 * and bpf_redirect_peer: the packet appears on the pod's eth0 without passing the node's
 * routing, netfilter or the lxc device's queue (ipv4_local_delivery). */
static __always_inline int local_delivery(struct __sk_buff *skb, struct endpoint_info *ep)
{
	struct packet p = {};
	struct ct_entry *ct;
	struct iphdr *ip;

	if (parse(skb, &p) == 0) {
		ct = ct_lookup_reply(&p);
		if (ct && ct->rev_nat_index && !ct->node_port && !ct->lb_loopback &&
		    lb4_rev_nat(skb, &p, ct->rev_nat_index) < 0)
			return drop(METRIC_DROP);
	}
	ip = ipv4(skb);
	if (!ip)
		return TC_ACT_OK;
	if (dec_ttl(skb, ip) < 0)
		return drop(METRIC_DROP);
	bpf_skb_store_bytes(skb, 0, ep->mac, ETH_ALEN, 0);
	bpf_skb_store_bytes(skb, ETH_ALEN, ep->node_mac, ETH_ALEN, 0);
	count(METRIC_LOCAL_DELIVERY);
	return bpf_redirect_peer(ep->ifindex, 0);
}

/* To another node through the VXLAN device: the outer destination is the tunnel endpoint the
 * ipcache gives, set as the packet's tunnel key (cilium_vxlan is flow based). */
static __always_inline int encap(struct __sk_buff *skb, struct node_config *cfg, __u32 remote)
{
	struct bpf_tunnel_key key = {};

	key.remote_ipv4 = bpf_ntohl(remote);
	key.tunnel_id = cfg->vni;
	key.tunnel_ttl = 64;
	if (bpf_skb_set_tunnel_key(skb, &key, sizeof(key), BPF_F_ZERO_CSUM_TX) < 0)
		return drop(METRIC_DROP);
	count(METRIC_TUNNEL);
	return bpf_redirect(cfg->vxlan_ifindex, 0);
}

/* The tunnel endpoint of a remote address in tunnel mode, 0 when it is not behind one. */
static __always_inline __u32 tunnel_endpoint(struct node_config *cfg, struct remote_endpoint_info *info)
{
	if (!cfg->tunnel || !info || !info->flag_has_tunnel_ep || info->flag_skip_tunnel)
		return 0;
	return info->tunnel_endpoint;
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

/* -- BPF masquerade (bpf/lib/nat.h) -------------------------------------------------------------- */

/* Whether a pod's packet leaves the cluster and so takes the node's address (snat_v4_needs_masquerade):
 * not to the native-routing CIDR, not to an address the ipcache knows as a node or a pod (with
 * enable-remote-node-masquerade off, its default), only from a pod of this node. */
static __always_inline int needs_masquerade(struct node_config *cfg, struct packet *p, struct remote_endpoint_info *info)
{
	if (!cfg->masquerade || !local_endpoint(p->tuple.saddr))
		return 0;
	if ((p->tuple.daddr & cfg->native_mask) == cfg->native_cidr)
		return 0;
	return !info || info->sec_identity == WORLD_ID;
}

/* The connection's source becomes `addr` (the node's) and a port of the node's (the one it had
 * when that is in range and free; an ICMP echo's id is not clamped), both directions recorded in
 * cilium_snat_v4_external: OUT (the original tuple -> the new source), IN (the reply's tuple ->
 * the original source). On a collision a random port, then the next ones (snat_v4_new_mapping). */
static __always_inline int snat_v4(struct __sk_buff *skb, struct packet *p, __be32 addr)
{
	struct ipv4_ct_tuple out = p->tuple, in = {};
	struct ipv4_nat_entry *state, fwd = {}, rev = {};
	__u16 port = bpf_ntohs(p->tuple.sport);
	__be32 to_addr;
	__be16 to_port;
	int i;

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
		fwd.common.created = rev.common.created;
		fwd.to_addr = to_addr;
		fwd.to_port = to_port;
		bpf_map_update_elem(&cilium_snat_v4_external, &out, &fwd, BPF_ANY);
	}
	if (rewrite4(skb, p, 1, to_addr, to_port) < 0)
		return -1;
	count(METRIC_SNAT);
	return 0;
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

/* -- the way on -------------------------------------------------------------------------------------- */

/* Where a packet goes once Services are done with it: a pod of this node, the tunnel, or the
 * FIB (a pod's packet to the world masqueraded first). */
static __always_inline int forward(struct __sk_buff *skb, struct packet *p, struct node_config *cfg)
{
	struct endpoint_info *ep = local_endpoint(p->tuple.daddr);
	struct remote_endpoint_info *info;
	struct iphdr *ip;
	__u32 remote;

	if (ep)
		return local_delivery(skb, ep);
	info = ipcache_lookup4(p->tuple.daddr);
	remote = tunnel_endpoint(cfg, info);
	if (remote) {
		ip = ipv4(skb);
		if (!ip)
			return TC_ACT_OK;
		if (dec_ttl(skb, ip) < 0)
			return drop(METRIC_DROP);
		return encap(skb, cfg, remote);
	}
	if (needs_masquerade(cfg, p, info) && snat_v4(skb, p, cfg->node_ip) < 0)
		return drop(METRIC_DROP_NAT);
	return fib_redirect(skb, cfg);
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

/* A pod reached itself through its Service (lb loopback): its reply to IPV4_LOOPBACK goes back
 * to itself, from the frontend. */
static __always_inline int lb4_loopback_reply(struct __sk_buff *skb, struct packet *p, struct node_config *cfg)
{
	struct ct_entry *ct = ct_lookup_reply(p);
	__be32 pod = p->tuple.saddr;

	if (!ct || !ct->lb_loopback)
		return drop(METRIC_DROP);
	if (rewrite4(skb, p, 0, pod, p->tuple.dport) < 0 || lb4_rev_nat(skb, p, ct->rev_nat_index) < 0)
		return drop(METRIC_DROP);
	return forward(skb, p, cfg);
}

/* A pod dialled a Service (lb4_local): DNAT to a backend; when the backend is the pod itself,
 * SNAT to IPV4_LOOPBACK too, or its own address would come back to it. 0: go on. */
static __always_inline int lb4_local(struct __sk_buff *skb, struct packet *p, struct lb4_service *svc)
{
	struct lb4_backend *backend;
	__u32 backend_id = 0;
	__be32 client = p->tuple.saddr;
	__be32 address;
	__be16 port;
	int loopback;

	backend = lb4_select(skb, p, svc, &backend_id);
	if (!backend)
		return drop(METRIC_DROP_NO_SERVICE);
	address = backend->address;
	port = backend->port;
	loopback = address == client;
	if (rewrite4(skb, p, 0, address, port) < 0)
		return drop(METRIC_DROP);
	if (loopback && rewrite4(skb, p, 1, IPV4_LOOPBACK, p->tuple.sport) < 0)
		return drop(METRIC_DROP);
	ct_account(skb, p, TUPLE_F_OUT, backend_id, svc->rev_nat_index, loopback, 0);
	count(METRIC_LB);
	return 0;
}

SEC("tc")
int cil_from_container(struct __sk_buff *skb)
{
	struct node_config *cfg = config();
	struct packet p = {};
	struct lb4_service *svc;
	struct ct_entry *ct;
	int ret;
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if (!cfg || (void *)(eth + 1) > end)
		return TC_ACT_OK;
	if (eth->h_proto == bpf_htons(ETH_P_ARP))
		return arp_respond(skb, cfg);
	if (eth->h_proto != bpf_htons(ETH_P_IP) || parse(skb, &p) < 0)
		return TC_ACT_OK;
	if (p.tuple.daddr == IPV4_LOOPBACK)
		return lb4_loopback_reply(skb, &p, cfg);
	ct = ct_lookup_reply(&p);
	if (ct && ct->node_port) {
		/* a backend's reply to a NodePort client it was handed without SNAT: from the frontend */
		if (lb4_rev_nat(skb, &p, ct->rev_nat_index) < 0)
			return drop(METRIC_DROP);
	} else {
		svc = lb4_lookup_service(&p);
		if (svc) {
			ret = lb4_local(skb, &p, svc);
			if (ret)
				return ret;
		}
	}
	return forward(skb, &p, cfg);
}

/* NodePort (nodeport_lb4): a backend for the node's frontend; one on this node is handed the
 * packet as it came (the client's address kept), one elsewhere gets it SNATed to the node, so
 * its reply comes back here to be turned around: to the node's IP (IPV4_DIRECT_ROUTING), or
 * behind a tunnel to its router IP (IPV4_GATEWAY), whose replies come back through the tunnel.
 * With externalTrafficPolicy Local the node's frontend holds its own backends only: none, and
 * the packet is dropped (--service-no-backend-response=drop; Cilium's default rejects). */
static __always_inline int nodeport_lb4(struct __sk_buff *skb, struct packet *p, struct lb4_service *svc,
					struct node_config *cfg)
{
	struct lb4_backend *backend;
	struct endpoint_info *ep;
	__u32 backend_id = 0;
	__be32 address;
	__be16 port;

	backend = lb4_select(skb, p, svc, &backend_id);
	if (!backend)
		return drop(METRIC_DROP_NO_SERVICE);
	address = backend->address;
	port = backend->port;
	if (rewrite4(skb, p, 0, address, port) < 0)
		return drop(METRIC_DROP);
	ct_account(skb, p, TUPLE_F_OUT, backend_id, svc->rev_nat_index, 0, 1);
	count(METRIC_LB);
	ep = local_endpoint(address);
	if (ep)
		return local_delivery(skb, ep);
	if (snat_v4(skb, p, tunnel_endpoint(cfg, ipcache_lookup4(address)) ? cfg->router_ip : cfg->node_ip) < 0)
		return drop(METRIC_DROP_NAT);
	return forward(skb, p, cfg);
}

/* A reply to an address the node SNATs to: back to the connection's client (a pod, or a NodePort
 * client whose reply gets the frontend as its source), then on its way. TC_ACT_UNSPEC: none. */
static __always_inline int snat_reply(struct __sk_buff *skb, struct packet *p, struct node_config *cfg)
{
	struct ct_entry *ct;
	int ret = snat_v4_rev(skb, p);

	if (ret < 0)
		return drop(METRIC_DROP);
	if (!ret)
		return TC_ACT_UNSPEC;
	ct = ct_lookup_reply(p);
	if (ct && ct->node_port && lb4_rev_nat(skb, p, ct->rev_nat_index) < 0)
		return drop(METRIC_DROP);
	return forward(skb, p, cfg);
}

/* What arrives on eth0: for the node's own address, a reply of something the node SNATed (a pod's
 * connection to the world, or a NodePort connection handed to a remote backend) or a NodePort;
 * else pod traffic from other nodes (native routing) or the node's own (not counted: the
 * underlay's traffic would drown the pods'). */
SEC("tc")
int cil_from_netdev(struct __sk_buff *skb)
{
	struct node_config *cfg = config();
	struct packet p = {};
	struct lb4_service *svc;
	struct endpoint_info *ep;
	int ret;

	if (!cfg || !ipv4(skb) || parse(skb, &p) < 0)
		return TC_ACT_OK;
	if (p.tuple.daddr == cfg->node_ip) {
		ret = snat_reply(skb, &p, cfg);
		if (ret != TC_ACT_UNSPEC)
			return ret;
		svc = lb4_lookup_service(&p);
		if (svc)
			return nodeport_lb4(skb, &p, svc, cfg);
		return TC_ACT_OK;
	}
	ep = local_endpoint(p.tuple.daddr);
	if (ep)
		return local_delivery(skb, ep);
	return TC_ACT_OK;
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
	struct endpoint_info *ep;
	struct iphdr *ip = ipv4(skb);
	struct packet p = {};
	int ret;

	if (!cfg || !ip)
		return TC_ACT_OK;
	if (ip->daddr == cfg->router_ip) {
		/* a backend's reply to a NodePort connection this node SNATed to its router IP */
		if (parse(skb, &p) == 0) {
			ret = snat_reply(skb, &p, cfg);
			if (ret != TC_ACT_UNSPEC)
				return ret;
		}
		bpf_skb_change_type(skb, PACKET_HOST);
		count(METRIC_TO_STACK);
		return TC_ACT_OK;
	}
	ep = local_endpoint(ip->daddr);
	if (ep)
		return local_delivery(skb, ep);
	count(METRIC_TO_STACK);
	return TC_ACT_OK;
}

/* What the node's own stack routes to pods (`<pod CIDR> via <router IP> dev cilium_host`): to a
 * local pod out of its lxc device; in tunnel mode to a remote node's pods through cilium_vxlan.
 * (The node's own connections to a ClusterIP are not balanced here: Cilium does that with socket
 * LB, which the lab leaves out.) */
SEC("tc")
int cil_from_host(struct __sk_buff *skb)
{
	struct node_config *cfg = config();
	struct endpoint_info *ep;
	struct iphdr *ip = ipv4(skb);
	__u32 remote;

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
	remote = tunnel_endpoint(cfg, ipcache_lookup4(ip->daddr));
	if (remote)
		return encap(skb, cfg, remote);
	count(METRIC_TO_STACK);
	return TC_ACT_OK;
}

char __license[] SEC("license") = "Dual BSD/GPL";
