// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* cni-lab's ebpf data plane: drops and policy verdicts as events (bpf/lib/notify.h, drop.h,
 * policy_log.h). Cilium writes them to cilium_events, a perf event array; the lab uses a BPF ring
 * buffer of the same name, with Cilium's message layouts and the packet's first bytes after them. */
#pragma once
#include "common.h"

#define CAPTURE_LEN 64 /* bytes of the packet after each message: Ethernet, IPv4, ports */
#define EVENTS_SIZE (256 * 1024) /* the ring's bytes (kernel/bpf.py EVENTS_SIZE) */

/* Drop reasons, as their absolute values (bpf/lib/drop_reasons.h: DROP_POLICY is -133) */
#define DROP_POLICY 133           /* "Policy denied" */
#define DROP_NO_SERVICE 158       /* "Service backend not found" */
#define DROP_NAT_NO_MAPPING 167   /* "No mapping for NAT masquerade" */
#define DROP_INVALID_IDENTITY 171 /* "Invalid identity" */

enum {
	CILIUM_NOTIFY_UNSPEC,
	CILIUM_NOTIFY_DROP,
	CILIUM_NOTIFY_DBG_MSG,
	CILIUM_NOTIFY_DBG_CAPTURE,
	CILIUM_NOTIFY_TRACE,
	CILIUM_NOTIFY_POLICY_VERDICT,
	CILIUM_NOTIFY_CAPTURE,
	CILIUM_NOTIFY_TRACE_SOCK,
};

#define NOTIFY_COMMON_HDR \
	__u8 type;        \
	__u8 subtype;     \
	__u16 source;     \
	__u32 hash;

#define NOTIFY_CAPTURE_HDR \
	NOTIFY_COMMON_HDR  \
	__u32 len_orig;    \
	__u16 len_cap;     \
	__u8 version;      \
	__u8 ext_version;

struct drop_notify {
	NOTIFY_CAPTURE_HDR
	__u32 src_label;
	__u32 dst_label;
	__u32 dst_id; /* 0 for egress */
	__u16 line;
	__u8 file;
	__s8 ext_error;
	__u32 ifindex;
	__u8 flags;
	__u8 pad2[3];
	__u64 ip_trace_id;
	__u8 data[CAPTURE_LEN];
};

struct policy_verdict_notify {
	NOTIFY_CAPTURE_HDR
	__u32 remote_label;
	__s32 verdict;
	__u16 dst_port;
	__u8 proto;
	__u8 dir:2,
	     ipv6:1,
	     match_type:3,
	     audited:1,
	     l3:1;
	__u8 auth_type;
	__u8 pad1[3];
	__u32 cookie;
	__u32 pad2;
	__u8 data[CAPTURE_LEN];
};

#define POLICY_INGRESS 1
#define POLICY_EGRESS 2

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, EVENTS_SIZE);
} cilium_events SEC(".maps");

/* The packet's first bytes after the message (len_cap of them). */
static __always_inline __u16 capture(struct __sk_buff *skb, __u8 *data)
{
	__u32 cap = skb->len < CAPTURE_LEN ? skb->len : CAPTURE_LEN;

	if (cap < ETH_HLEN || bpf_skb_load_bytes(skb, 0, data, cap & (CAPTURE_LEN * 2 - 1)) < 0)
		return 0;
	return (__u16)cap;
}

static __always_inline void send_drop_notify(struct __sk_buff *skb, __u32 src, __u32 dst, __u16 dst_id, __u8 reason,
					     __u32 ifindex)
{
	struct drop_notify *msg = bpf_ringbuf_reserve(&cilium_events, sizeof(*msg), 0);

	if (!msg)
		return;
	__builtin_memset(msg, 0, sizeof(*msg));
	msg->type = CILIUM_NOTIFY_DROP;
	msg->subtype = reason;
	msg->source = dst_id;
	msg->len_orig = skb->len;
	msg->version = 3;
	msg->src_label = src;
	msg->dst_label = dst;
	msg->dst_id = dst_id;
	msg->ifindex = ifindex;
	msg->len_cap = capture(skb, msg->data);
	bpf_ringbuf_submit(msg, 0);
}

static __always_inline void send_policy_verdict(struct __sk_buff *skb, __u8 proto, __be16 dport, int ipv6, __u16 lxc_id,
						__u32 remote, int egress, int allowed)
{
	struct policy_verdict_notify *msg = bpf_ringbuf_reserve(&cilium_events, sizeof(*msg), 0);

	if (!msg)
		return;
	__builtin_memset(msg, 0, sizeof(*msg));
	msg->type = CILIUM_NOTIFY_POLICY_VERDICT;
	msg->source = lxc_id;
	msg->len_orig = skb->len;
	msg->version = 1;
	msg->remote_label = remote;
	msg->verdict = allowed ? 0 : -DROP_POLICY;
	msg->dst_port = bpf_ntohs(dport);
	msg->proto = proto;
	msg->ipv6 = ipv6;
	msg->dir = egress ? POLICY_EGRESS : POLICY_INGRESS;
	msg->len_cap = capture(skb, msg->data);
	bpf_ringbuf_submit(msg, 0);
}

/* Observation points (bpf/lib/notify.h enum trace_point) the lab reports a trace at */
enum {
	TRACE_TO_LXC,
	TRACE_TO_PROXY,
	TRACE_TO_HOST,
	TRACE_TO_STACK,
	TRACE_TO_OVERLAY,
	TRACE_FROM_LXC,
	TRACE_FROM_PROXY,
	TRACE_FROM_HOST,
	TRACE_FROM_STACK,
	TRACE_FROM_OVERLAY,
	TRACE_FROM_NETWORK,
	TRACE_TO_NETWORK,
};

#define TRACE_REASON_POLICY 0 /* CT_NEW: a connection's first packet (bpf/lib/trace.h) */

/* bpf/lib/trace.h's struct trace_notify (version 1: no ip_trace_id use). A trace is sent for a
 * connection's first packet only (as MONITOR_AGGREGATION medium reports new connections), where
 * it leaves a pod (TRACE_FROM_LXC), is delivered to one (TRACE_TO_LXC), leaves SNATed
 * (TRACE_TO_NETWORK) or enters as a NodePort (TRACE_FROM_NETWORK). orig_ip4: the address before
 * the program translated it (a Service's frontend, a masqueraded pod), 0 if none; its port in
 * orig_pad1 (the lab's addition: a frontend is an address and a port). */
struct trace_notify {
	NOTIFY_CAPTURE_HDR
	__u32 src_label;
	__u32 dst_label;
	__u16 dst_id;
	__u8 reason;
	__u8 flags;
	__u32 ifindex;
	__be32 orig_ip4;
	__u32 orig_pad1; /* the lab's: the port before translation, network byte order (Cilium's is 0) */
	__u32 orig_pad2;
	__u32 orig_pad3;
	__u64 ip_trace_id;
	__u8 data[CAPTURE_LEN];
};

static __always_inline void send_trace_notify(struct __sk_buff *skb, __u8 obs_point, __u32 src, __u32 dst,
					      __u16 dst_id, __be32 orig_ip4, __be16 orig_port)
{
	struct trace_notify *msg;

	/* traces keep to half the ring: unread, they must not crowd out the drops */
	if (bpf_ringbuf_query(&cilium_events, BPF_RB_AVAIL_DATA) > EVENTS_SIZE / 2)
		return;
	msg = bpf_ringbuf_reserve(&cilium_events, sizeof(*msg), 0);
	if (!msg)
		return;
	__builtin_memset(msg, 0, sizeof(*msg));
	msg->type = CILIUM_NOTIFY_TRACE;
	msg->subtype = obs_point;
	msg->source = dst_id;
	msg->len_orig = skb->len;
	msg->version = 1;
	msg->src_label = src;
	msg->dst_label = dst;
	msg->dst_id = dst_id;
	msg->reason = TRACE_REASON_POLICY;
	msg->ifindex = skb->ifindex;
	msg->orig_ip4 = orig_ip4;
	msg->orig_pad1 = orig_port;
	msg->len_cap = capture(skb, msg->data);
	bpf_ringbuf_submit(msg, 0);
}
