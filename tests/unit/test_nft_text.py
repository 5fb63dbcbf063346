"""rulesets/nft.py: the nftables text the lab writes, and its reading of what `nft list table` prints."""

from __future__ import annotations

from cni_lab.rulesets import nft

# `nft list table ip flannel-ipv4` as nft prints it (tabs; a table comment, a chain comment, the
# base chain's type line), from flannel's documentation of its nftables mode
FLANNEL_LISTING = """table ip flannel-ipv4 {
\tcomment "rules for flannel-ipv4"
\tchain postrtg {
\t\tcomment "chain to manage traffic masquerading by flannel"
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\tmeta mark 0x00004000 return
\t\tip saddr 10.244.1.0/24 ip daddr 10.244.0.0/16 return
\t\tip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random
\t}

\tchain forward {
\t\tcomment "chain to accept flannel traffic"
\t\ttype filter hook forward priority filter; policy accept;
\t\tip saddr 10.244.0.0/16 accept
\t\tip daddr 10.244.0.0/16 accept
\t}
}
"""

# kube-proxy's nftables mode lists a map and a set beside its chains
KUBE_PROXY_LISTING = """table ip kube-proxy {
\tcomment "rules for kube-proxy"
\tset cluster-ips {
\t\ttype ipv4_addr
\t\tcomment "Active ClusterIPs"
\t\telements = { 10.96.0.2, 10.96.0.3 }
\t}

\tmap service-ips {
\t\ttype ipv4_addr . inet_proto . inet_service : verdict
\t\tcomment "ClusterIP, ExternalIP and LoadBalancer IP traffic"
\t\telements = { 10.96.0.2 . tcp . 80 : goto service-ULMVA6XW-default/web/tcp/,
\t\t\t     10.96.0.3 . tcp . 90 : goto reject-chain }
\t}

\tchain services {
\t\tip daddr . meta l4proto . th dport vmap @service-ips
\t}

\tchain empty {
\t}
}
"""


def test_replace_creates_then_deletes_so_the_lines_after_write_the_table_anew() -> None:
    # `table` first: deleting a table that is not there fails the whole `nft -f` transaction
    assert nft.replace("inet", "cni-lab-policy") == ["table inet cni-lab-policy {}", "delete table inet cni-lab-policy"]
    assert nft.replace("ip", "flannel-ipv4") == ["table ip flannel-ipv4 {}", "delete table ip flannel-ipv4"]


def test_chains_are_indented_as_inside_a_table_in_the_order_given() -> None:
    lines = nft.chains({"to-wl-x-a": ["jump pi-x-allow", "counter drop"], "pi-x-allow": []})
    assert lines == ["  chain to-wl-x-a {", "    jump pi-x-allow", "    counter drop", "  }",
                     "  chain pi-x-allow {", "  }"]
    assert nft.chains({}) == []


def test_parse_chains_reads_nfts_listing_without_type_and_comment_lines() -> None:
    assert nft.parse_chains(FLANNEL_LISTING) == {
        "postrtg": ["meta mark 0x00004000 return",
                    "ip saddr 10.244.1.0/24 ip daddr 10.244.0.0/16 return",
                    "ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random"],
        "forward": ["ip saddr 10.244.0.0/16 accept", "ip daddr 10.244.0.0/16 accept"],
    }


def test_parse_chains_leaves_sets_and_maps_out_and_keeps_an_empty_chain() -> None:
    assert nft.parse_chains(KUBE_PROXY_LISTING) == {
        "services": ["ip daddr . meta l4proto . th dport vmap @service-ips"], "empty": []}
    assert nft.parse_chains("") == {}


def test_what_chains_writes_parse_chains_reads_back() -> None:
    named = {"forward": ["ct state established,related accept", "ip daddr 10.244.0.3 jump to-wl-x-a"],
             "to-wl-x-a": ["meta mark set meta mark & 0xfffeffff", "jump pi-x-allow-b",
                           "meta mark & 0x10000 == 0x10000 return", 'counter drop comment "x/a: no ingress policy allows this"'],
             "pi-x-allow-b": ["ip saddr { 10.244.0.4 } tcp dport 80 meta mark set meta mark | 0x10000 return"]}
    text = "\n".join(["table inet t {", *nft.chains(named), "}"])
    assert nft.parse_chains(text) == named


def test_parse_elements_reads_a_map_or_a_set_one_element_each() -> None:
    assert nft.parse_elements(KUBE_PROXY_LISTING, "service-ips") == [
        "10.96.0.2 . tcp . 80 : goto service-ULMVA6XW-default/web/tcp/", "10.96.0.3 . tcp . 90 : goto reject-chain"]
    assert nft.parse_elements(KUBE_PROXY_LISTING, "cluster-ips") == ["10.96.0.2", "10.96.0.3"]
    assert nft.parse_elements(KUBE_PROXY_LISTING, "no-such-map") == []
    assert nft.parse_elements("table ip t {\n\tset s {\n\t\ttype ipv4_addr\n\t}\n}\n", "s") == []  # empty: no elements line
