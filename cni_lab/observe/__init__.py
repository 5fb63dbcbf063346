"""`cni-lab observe`, the pure half: what the lab's namespaces report about their packets
(kernel/flowsources.py) turned into flows a learner reads, as Hubble shows Cilium's.

    packets.py      an IP packet from its header on: addresses, ports, flags, ICMP (errors' quoted packet)
    flows.py        Flow and Peer, and the JSON `hubble observe -o json` prints (docs/flow.schema.json)
    peers.py        every address, namespace and device of a lab named
    decode.py       `Decoder(lab, faults).flow(raw)`: the verdict and the cause
    icmp_errors.py  an ICMP error in words
    filters.py      hubble-like filters (--pod, --node, --from, --to, --port, --protocol, --verdict, --since)
    summary.py      top talkers and top drop causes

No kernel, no terminal: kernel/flowsources.py reads, report/flow_view.py renders.
"""
