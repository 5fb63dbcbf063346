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
 * The parts every program shares are in ebpf_lib/, named after Cilium's bpf/lib: common.h (the
 * endpoints map, node_config, metrics, a packet's tuple and its rewrite), eps.h (the ipcache),
 * conntrack.h, lb.h (Services), nat.h (BPF masquerade).
 *
 * Cilium compiles one object per endpoint with its addresses as constants; cni-lab compiles once
 * and puts them in maps, so the object is built once per source version and cached.
 * IPv4 only: IPv6 and everything else is passed to the kernel's stack untouched.
 */
#include "ebpf_lib/common.h"
#include "ebpf_lib/eps.h"
#include "ebpf_lib/conntrack.h"
#include "ebpf_lib/lb.h"
#include "ebpf_lib/nat.h"

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
