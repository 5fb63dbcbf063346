// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* cni-lab's ebpf data plane: the ipcache: where an address lives, its identity and tunnel endpoint (bpf/lib/eps.h) */
#pragma once
#include "common.h"

#define IPCACHE_STATIC_PREFIX 32 /* cluster_id, pad1, family: the bits before the address */

/* bpf/lib/eps.h: the LPM key starts with the prefix length, which counts the 32 bits of
 * cluster_id, pad1 and family before the address */
struct ipcache_key {
	__u32 prefixlen;
	__u16 cluster_id;
	__u8 pad1;
	__u8 family;
	union {
		struct {
			__u32 ip4;
			__u32 pad4;
			__u32 pad5;
			__u32 pad6;
		};
		__u8 ip6[16];
	};
} __attribute__((packed));

struct remote_endpoint_info {
	__u32 sec_identity;
	union { /* the node behind which the prefix lives, network byte order */
		struct {
			__u32 tunnel_endpoint; /* IPv4 */
			__u32 pad1;
			__u32 pad2;
			__u32 pad3;
		};
		__u32 tunnel_endpoint6[4]; /* IPv6: flag_ipv6_tunnel_ep */
	};
	__u16 pad;
	__u8 key;
	__u8 flag_skip_tunnel:1,
	     flag_has_tunnel_ep:1,
	     flag_ipv6_tunnel_ep:1,
	     flag_remote_cluster:1,
	     pad4:4;
};


struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct ipcache_key);
	__type(value, struct remote_endpoint_info);
} cilium_ipcache_v2 SEC(".maps");

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

static __always_inline struct remote_endpoint_info *ipcache_lookup6(const __u8 *addr)
{
	struct ipcache_key key = {
		.prefixlen = IPCACHE_STATIC_PREFIX + 128,
		.family = ENDPOINT_KEY_IPV6,
	};

	__builtin_memcpy(key.ip6, addr, 16);
	return bpf_map_lookup_elem(&cilium_ipcache_v2, &key);
}

