// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* cni-lab's ebpf data plane: Services: the frontend lookup, backend selection and reverse NAT (bpf/lib/lb.h) */
#pragma once
#include "conntrack.h"

#define LB_LOOKUP_SCOPE_EXT 0

/* The address a pod reaching itself through its Service is seen from (--ipv4-service-loopback-address) */
#define IPV4_LOOPBACK bpf_htonl(0xa9fe2a01) /* 169.254.42.1 */

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

