"""nftables rulesets the nodes load, each in the shape of the real component that writes it:
NetworkPolicy as Calico's Felix enforces it (`netpol`), egress masquerade as flannel and Calico
do it (`masquerade`), Services as kube-proxy's nftables mode (`kubeproxy`); `nft` renders text.
Pure: the lab in, ruleset text out; a plan step loads it in a node's namespace."""
