// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * cni-lab's Cilium-style datapath: the tc programs of the `ebpf` data plane, as Cilium runs with
 * kubeProxyReplacement: true, bpf.masquerade: true and socket LB off (Services per packet).
 *
 * Written for cni-lab after Cilium's bpf/ (bpf_lxc.c, bpf_host.c, bpf_overlay.c, lib/lb.h,
 * lib/nodeport.h, lib/nat.h, lib/conntrack.h); not Cilium's code. The names and the maps' key and
 * value layouts are Cilium's, the programs are much smaller:
 *
 *   cil_from_container  tc ingress of every pod's lxc device (what the pod sends): ARP (and IPv6
 *                       neighbour solicitation) for the router, Services (lb4: DNAT to a
 *                       backend), replies of NodePort connections, egress policy, then local
 *                       delivery (ingress policy), the tunnel (the sender's identity as VNI), or a
 *                       FIB lookup (masqueraded to the world)
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
 *   cilium_ct4_global        connection tracking (TCP; cilium_ct_any4_global the rest): every
 *                            connection a pod opens or is opened to (so replies pass its policy),
 *                            Service connections (their backend) and the reverse NAT
 *   cilium_policy_v2         endpoint ID -> its policy map, cilium_policy_v2_<id> (identity,
 *                            direction, protocol, port -> allow), looked up on egress and ingress
 *   cilium_events            a ring buffer of drops and policy verdicts (Cilium's notify messages)
 *   cilium_snat_v4_external  BPF masquerade: a pod's connection to the world <-> the node's address
 *                            and port; NodePort connections SNATed to a remote backend likewise
 *   node_config              what Cilium compiles into node_config.h: ifindexes, the router IP,
 *                            the node's IP, the VNI, the routing mode, masquerade on or off
 *   cilium_metrics           packets per action, what `cni-lab trace` reads before and after a probe
 *
 * The parts every program shares are in ebpf_lib/, named after Cilium's bpf/lib: common.h (the
 * endpoints map, node_config, metrics, a packet's tuple and its rewrite), eps.h (the ipcache),
 * conntrack.h, lb.h (Services), nat.h (BPF masquerade), policy.h (NetworkPolicy by identity),
 * events.h (the ring buffer), ipv6.h, fib.h (forwarding by the node's FIB).
 *
 * Cilium compiles one object per endpoint with its addresses as constants; cni-lab compiles once
 * and puts them in maps, so the object is built once per source version and cached.
 * IPv6 is forwarded and policed as IPv4 is (ipv6.h); Services and masquerade are IPv4's.
 */
#include "ebpf_lib/common.h"
#include "ebpf_lib/eps.h"
#include "ebpf_lib/conntrack.h"
#include "ebpf_lib/lb.h"
#include "ebpf_lib/nat.h"
#include "ebpf_lib/policy.h"
#include "ebpf_lib/ipv6.h"
#include "ebpf_lib/fib.h"

/* -- forwarding ------------------------------------------------------------------------------------ */

/* Ethernet addresses as the pod expects them (from its router, the lxc device, to its eth0), and
 * bpf_redirect_peer: the packet appears on the pod's eth0 without passing the node's routing,
 * netfilter or the lxc device's queue (ipv4_local_delivery). */
static __always_inline int redirect_to_pod(struct __sk_buff *skb, struct endpoint_info *ep)
{
	struct iphdr *ip = ipv4(skb);

	if (!ip)
		return TC_ACT_OK;
	if (dec_ttl(skb, ip) < 0)
		return drop(METRIC_DROP);
	bpf_skb_store_bytes(skb, 0, ep->mac, ETH_ALEN, 0);
	bpf_skb_store_bytes(skb, ETH_ALEN, ep->node_mac, ETH_ALEN, 0);
	count(METRIC_LOCAL_DELIVERY);
	return bpf_redirect_peer(ep->ifindex, 0);
}

/* Into a pod of this node: a reply of a connection the pod made passes (a Service's gets the
 * frontend back as its source: the client side's reverse NAT, as bpf_lxc's to-container path
 * does); anything else must be allowed by the pod's ingress policy for the sender's identity
 * (`identity`, from the tunnel; 0: the ipcache's for the source address), and a new connection
 * is tracked so its replies pass the other way. */
static __always_inline int local_delivery(struct __sk_buff *skb, struct endpoint_info *ep, __u32 identity)
{
	struct packet p = {};
	struct ct_entry *ct;
	int state;

	if (parse(skb, &p) == 0) {
		state = ct_state(&p, TUPLE_F_IN);
		if (state == CT_REPLY) {
			ct = ct_lookup_reply(&p);
			if (ct && ct->rev_nat_index && !ct->node_port && !ct->lb_loopback &&
			    lb4_rev_nat(skb, &p, ct->rev_nat_index) < 0)
				return drop(METRIC_DROP);
		} else if (p.tuple.saddr != IPV4_LOOPBACK) {
			identity = identity ? identity : identity_of(p.tuple.saddr);
			if (policy_enforce(skb, &p, ep, identity, 0, state))
				return TC_ACT_SHOT;
			if (state == CT_NEW)
				send_trace_notify(skb, TRACE_TO_LXC, identity, ep->sec_id, ep->lxc_id, 0, 0);
		}
	}
	return redirect_to_pod(skb, ep);
}

/* To another node through the VXLAN device: the outer destination is the tunnel endpoint the
 * ipcache gives, set as the packet's tunnel key with the sender's identity as its VNI
 * (cilium_vxlan is flow based). */
static __always_inline int encap(struct __sk_buff *skb, struct node_config *cfg, struct remote_endpoint_info *info,
				 __u32 identity)
{
	struct bpf_tunnel_key key = {};
	__u64 flags = BPF_F_ZERO_CSUM_TX;

	if (info->flag_ipv6_tunnel_ep) { /* an IPv6 underlay: UDP over IPv6 keeps its checksum */
		__builtin_memcpy(key.remote_ipv6, info->tunnel_endpoint6, 16);
		flags = BPF_F_TUNINFO_IPV6;
	} else {
		key.remote_ipv4 = bpf_ntohl(info->tunnel_endpoint);
	}
	/* the sender's identity travels in the VNI; the host's as remote-node (__encap_with_nodeid4) */
	key.tunnel_id = identity == HOST_ID ? REMOTE_NODE_ID : identity ? identity : cfg->vni;
	key.tunnel_ttl = 64;
	if (bpf_skb_set_tunnel_key(skb, &key, sizeof(key), flags) < 0)
		return drop(METRIC_DROP);
	count(METRIC_TUNNEL);
	return bpf_redirect(cfg->vxlan_ifindex, 0);
}

/* Whether a remote address is behind a tunnel endpoint (tunnel mode only). */
static __always_inline int tunnelled(struct node_config *cfg, struct remote_endpoint_info *info)
{
	return cfg->tunnel && info && info->flag_has_tunnel_ep && !info->flag_skip_tunnel;
}

/* -- the way on -------------------------------------------------------------------------------------- */

/* Where a packet goes once Services are done with it: a pod of this node, the tunnel, or the
 * FIB (a pod's packet to the world masqueraded first). */
static __always_inline int forward(struct __sk_buff *skb, struct packet *p, struct node_config *cfg)
{
	struct endpoint_info *ep = local_endpoint(p->tuple.daddr);
	struct remote_endpoint_info *info;
	struct iphdr *ip;

	if (ep)
		return local_delivery(skb, ep, 0);
	info = ipcache_lookup4(p->tuple.daddr);
	if (info && tunnelled(cfg, info)) {
		ip = ipv4(skb);
		if (!ip)
			return TC_ACT_OK;
		if (dec_ttl(skb, ip) < 0)
			return drop(METRIC_DROP);
		return encap(skb, cfg, info, identity_of(p->tuple.saddr));
	}
	if (needs_masquerade(cfg, p, info)) {
		__be32 pod = p->tuple.saddr;
		__be16 sport = p->tuple.sport;
		int fresh = snat_v4(skb, p, cfg->node_ip);

		if (fresh < 0)
			return drop(METRIC_DROP_NAT);
		if (fresh) /* a connection masqueraded: what observe reports as its translation */
			send_trace_notify(skb, TRACE_TO_NETWORK, identity_of(pod), WORLD_ID, 0, pod, sport);
	}
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
	struct endpoint_info *ep = local_endpoint(pod);

	if (!ct || !ct->lb_loopback || !ep)
		return drop(METRIC_DROP);
	if (rewrite4(skb, p, 0, pod, p->tuple.dport) < 0 || lb4_rev_nat(skb, p, ct->rev_nat_index) < 0)
		return drop(METRIC_DROP);
	return redirect_to_pod(skb, ep); /* the pod's own connection: no policy between it and itself */
}

/* A pod dialled a Service (lb4_local): DNAT to a backend; when the backend is the pod itself,
 * SNAT to IPV4_LOOPBACK too, or its own address would come back to it. 0: go on (*created: the
 * connection is new). */
static __always_inline int lb4_local(struct __sk_buff *skb, struct packet *p, struct lb4_service *svc, int *created)
{
	struct lb4_backend *backend;
	__u32 backend_id = 0;
	__be32 client = p->tuple.saddr;
	__be32 address;
	__be16 port;
	int loopback;

	backend = lb4_select(skb, p, svc, &backend_id);
	if (!backend) {
		send_drop_notify(skb, identity_of(client), 0, 0, DROP_NO_SERVICE, skb->ifindex);
		return drop(METRIC_DROP_NO_SERVICE);
	}
	address = backend->address;
	port = backend->port;
	loopback = address == client;
	if (rewrite4(skb, p, 0, address, port) < 0)
		return drop(METRIC_DROP);
	if (loopback && rewrite4(skb, p, 1, IPV4_LOOPBACK, p->tuple.sport) < 0)
		return drop(METRIC_DROP);
	*created = ct_account(skb, p, TUPLE_F_OUT, backend_id, svc->rev_nat_index, loopback, 0);
	count(METRIC_LB);
	return 0;
}

/* The node's own packet to a pod of this node: out of the pod's lxc device (bpf_redirect_peer
 * works from tc ingress only, and this is cilium_host's egress), with the MACs the pod expects. */
static __always_inline int out_of_lxc(struct __sk_buff *skb, struct endpoint_info *ep)
{
	bpf_skb_store_bytes(skb, 0, ep->mac, ETH_ALEN, 0);
	bpf_skb_store_bytes(skb, ETH_ALEN, ep->node_mac, ETH_ALEN, 0);
	count(METRIC_LOCAL_DELIVERY);
	return bpf_redirect(ep->ifindex, 0);
}

/* -- IPv6: forwarding and policy (the lab's Services and masquerade are IPv4's) ----------------------- */

static __always_inline int forward6(struct __sk_buff *skb, struct node_config *cfg, __u32 identity)
{
	struct ipv6hdr *ip6 = ipv6(skb);
	struct remote_endpoint_info *info;
	struct endpoint_info *ep;
	__u8 daddr[16];

	if (!ip6)
		return TC_ACT_OK;
	__builtin_memcpy(daddr, &ip6->daddr, 16);
	ep = local_endpoint6(daddr);
	if (ep)
		return local_delivery6(skb, ep, 0);
	info = ipcache_lookup6(daddr);
	if (info && tunnelled(cfg, info)) {
		if (dec_hop_limit(skb, ip6) < 0)
			return drop(METRIC_DROP);
		return encap(skb, cfg, info, identity);
	}
	return fib_redirect6(skb, cfg);
}

/* What a pod sends over IPv6: its neighbour solicitation for the router answered here, the rest
 * forwarded as IPv4 is. */
static __always_inline int from_container6(struct __sk_buff *skb, struct node_config *cfg)
{
	struct ipv6hdr *ip6 = ipv6(skb);
	struct ipv6_ct_tuple t = {};
	struct endpoint_info *src;
	void *end = (void *)(long)skb->data_end;
	__u32 identity;
	__u8 *icmp;

	if (!ip6)
		return TC_ACT_OK;
	icmp = (void *)(ip6 + 1);
	if (ip6->nexthdr == IPPROTO_ICMPV6 && (void *)(icmp + 1) <= end && icmp[0] == ICMP6_NS)
		return ndp_respond(skb, cfg);
	if (parse6(skb, &t) < 0)
		return TC_ACT_OK;
	identity = identity_of6(t.saddr);
	src = local_endpoint6(t.saddr);
	/* egress policy, multicast aside (router solicitations, MLD: the node's stack takes them) */
	if (src && t.daddr[0] != 0xff && policy_enforce6(skb, &t, src, identity_of6(t.daddr), 1))
		return TC_ACT_SHOT;
	return forward6(skb, cfg, identity);
}

/* IPv6 from other nodes into a pod of this node (the sender's identity from the tunnel, or 0:
 * the ipcache's); the rest is the node's. */
static __always_inline int to_local_pod6(struct __sk_buff *skb, __u32 identity)
{
	struct ipv6hdr *ip6 = ipv6(skb);
	struct endpoint_info *ep;

	if (!ip6)
		return TC_ACT_OK;
	ep = local_endpoint6(ip6->daddr.in6_u.u6_addr8);
	return ep ? local_delivery6(skb, ep, identity) : TC_ACT_OK;
}

/* IPv6 out of the tunnel: for the router IP, the node's (as for IPv4); else into its pod. */
static __always_inline int from_overlay6(struct __sk_buff *skb, struct node_config *cfg, __u32 identity)
{
	struct ipv6hdr *ip6 = ipv6(skb);

	if (!ip6)
		return TC_ACT_OK;
	if (identity == REMOTE_NODE_ID) /* a node: refined by its address */
		identity = identity_of6(ip6->saddr.in6_u.u6_addr8);
	if (ipv6_equal(&ip6->daddr, cfg->router_ip6)) {
		bpf_skb_change_type(skb, PACKET_HOST);
		count(METRIC_TO_STACK);
		return TC_ACT_OK;
	}
	return to_local_pod6(skb, identity);
}

/* What the node's stack routes to pods over IPv6: out of a local pod's lxc device, or tunnelled. */
static __always_inline int from_host6(struct __sk_buff *skb, struct node_config *cfg)
{
	struct ipv6hdr *ip6 = ipv6(skb);
	struct remote_endpoint_info *info;
	struct ipv6_ct_tuple t = {};
	struct endpoint_info *ep;
	__u8 daddr[16];

	if (!ip6)
		return TC_ACT_OK;
	__builtin_memcpy(daddr, &ip6->daddr, 16);
	ep = local_endpoint6(daddr);
	if (ep) {
		/* the local node may always reach its pods: tracked, so replies pass the pod's egress */
		if (parse6(skb, &t) == 0 && ct_state6(&t, TUPLE_F_IN) == CT_NEW)
			ct_create6(skb, &t, TUPLE_F_IN, HOST_ID);
		return out_of_lxc(skb, ep);
	}
	info = ipcache_lookup6(daddr);
	if (info && tunnelled(cfg, info))
		return encap(skb, cfg, info, HOST_ID);
	count(METRIC_TO_STACK);
	return TC_ACT_OK;
}

SEC("tc")
int cil_from_container(struct __sk_buff *skb)
{
	struct node_config *cfg = config();
	struct packet p = {};
	struct lb4_service *svc;
	struct endpoint_info *src;
	struct ct_entry *ct;
	int ret, state, created = 0;
	__be32 frontend;
	__be16 frontend_port;
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if (!cfg || (void *)(eth + 1) > end)
		return TC_ACT_OK;
	if (eth->h_proto == bpf_htons(ETH_P_ARP))
		return arp_respond(skb, cfg);
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return from_container6(skb, cfg);
	if (eth->h_proto != bpf_htons(ETH_P_IP) || parse(skb, &p) < 0)
		return TC_ACT_OK;
	if (p.tuple.daddr == IPV4_LOOPBACK)
		return lb4_loopback_reply(skb, &p, cfg);
	frontend = p.tuple.daddr;
	frontend_port = p.tuple.dport;
	state = ct_state(&p, TUPLE_F_OUT); /* a reply, before any translation: no policy for it */
	ct = ct_lookup_reply(&p);
	if (ct && ct->node_port) {
		/* a backend's reply to a NodePort client it was handed without SNAT: from the frontend */
		if (lb4_rev_nat(skb, &p, ct->rev_nat_index) < 0)
			return drop(METRIC_DROP);
	} else {
		svc = lb4_lookup_service(&p);
		if (svc) {
			ret = lb4_local(skb, &p, svc, &created);
			if (ret)
				return ret;
		}
	}
	/* egress policy on what the pod sends, to where it goes once a Service is translated (a pod
	 * reaching itself through its Service aside) */
	src = local_endpoint(p.tuple.saddr);
	if (state != CT_REPLY && src && p.tuple.saddr != IPV4_LOOPBACK) {
		if (!created)
			state = ct_state(&p, TUPLE_F_OUT);
		if (policy_enforce(skb, &p, src, identity_of(p.tuple.daddr), 1, created ? CT_NEW : state))
			return TC_ACT_SHOT;
		if (created || state == CT_NEW) /* a connection's first packet; a Service's: its frontend too */
			send_trace_notify(skb, TRACE_FROM_LXC, src->sec_id, identity_of(p.tuple.daddr), 0,
					  created ? frontend : 0, created ? frontend_port : 0);
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
	__be32 address, frontend = p->tuple.daddr;
	__be16 port, frontend_port = p->tuple.dport;

	backend = lb4_select(skb, p, svc, &backend_id);
	if (!backend) {
		send_drop_notify(skb, identity_of(p->tuple.saddr), 0, 0, DROP_NO_SERVICE, skb->ifindex);
		return drop(METRIC_DROP_NO_SERVICE);
	}
	address = backend->address;
	port = backend->port;
	if (rewrite4(skb, p, 0, address, port) < 0)
		return drop(METRIC_DROP);
	if (ct_account(skb, p, TUPLE_F_OUT, backend_id, svc->rev_nat_index, 0, 1))
		send_trace_notify(skb, TRACE_FROM_NETWORK, identity_of(p->tuple.saddr), identity_of(address), 0,
				  frontend, frontend_port);
	count(METRIC_LB);
	ep = local_endpoint(address);
	if (ep)
		return local_delivery(skb, ep, 0);
	if (snat_v4(skb, p, tunnelled(cfg, ipcache_lookup4(address)) ? cfg->router_ip : cfg->node_ip) < 0)
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

	if (!cfg)
		return TC_ACT_OK;
	if (ipv6(skb))
		return to_local_pod6(skb, 0);
	if (!ipv4(skb) || parse(skb, &p) < 0)
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
		return local_delivery(skb, ep, 0);
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
	struct bpf_tunnel_key key = {};
	struct packet p = {};
	__u32 identity = 0;
	__be32 saddr, daddr;
	int ret;

	if (!cfg)
		return TC_ACT_OK;
	/* the sender's identity, from the VNI (bpf_overlay.c), over an IPv4 or IPv6 underlay; a
	 * node's is refined by its address */
	if (bpf_skb_get_tunnel_key(skb, &key, sizeof(key), 0) == 0 ||
	    bpf_skb_get_tunnel_key(skb, &key, sizeof(key), BPF_F_TUNINFO_IPV6) == 0)
		identity = key.tunnel_id;
	if (identity == HOST_ID) {
		send_drop_notify(skb, identity, 0, 0, DROP_INVALID_IDENTITY, skb->ifindex);
		return drop(METRIC_DROP_IDENTITY);
	}
	if (!ip)
		return from_overlay6(skb, cfg, identity);
	saddr = ip->saddr;
	daddr = ip->daddr;
	if (identity == REMOTE_NODE_ID)
		identity = identity_of(saddr);
	if (daddr == cfg->router_ip) {
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
	ep = local_endpoint(daddr);
	if (ep)
		return local_delivery(skb, ep, identity);
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
	struct remote_endpoint_info *info;
	struct packet p = {};

	if (!cfg)
		return TC_ACT_OK;
	if (!ip)
		return from_host6(skb, cfg);
	ep = local_endpoint(ip->daddr);
	if (ep) {
		/* the local node may always reach its pods (allow-localhost): tracked, so replies pass */
		if (parse(skb, &p) == 0 && ct_state(&p, TUPLE_F_IN) == CT_NEW)
			ct_create(skb, &p, TUPLE_F_IN, HOST_ID);
		return out_of_lxc(skb, ep);
	}
	info = ipcache_lookup4(ip->daddr);
	if (info && tunnelled(cfg, info))
		return encap(skb, cfg, info, HOST_ID);
	count(METRIC_TO_STACK);
	return TC_ACT_OK;
}

char __license[] SEC("license") = "Dual BSD/GPL";
