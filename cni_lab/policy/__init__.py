"""NetworkPolicy (networking.k8s.io/v1): read as the API server validates it, and evaluated as
Kubernetes defines it. Pure: the reference the kernel's enforcement is held against.

    objects.py    the values: selectors, peers, ports, rules, policies; a workload as policies see it
    reading.py    `parse(document, where)`: one object as `kubectl apply` takes it, refusing what the
                  API server refuses (unknown fields, bad selector operators, `endPort` without a
                  numeric `port`, an `except` outside its `cidr`, ...), defaulting policyTypes as it
                  does, ipBlock CIDRs as Kubernetes 1.36 reads them (host bits, with its warning)
    evaluator.py  `Evaluator(namespaces, policies).allowed(src, dst, protocol, port)`: a pod selected
                  by no policy of a direction allows everything in it; policies add up; a connection
                  needs the source's egress and the destination's ingress, except that a pod's own
                  node always gets in; ICMP passes only a rule without `ports`; a named port is
                  resolved on the destination pod. `explain` gives the same answer with its cause;
                  `truth_table` is the e2e suite's grid
    cause.py      why a connection is allowed or denied: the value `explain` returns
    words.py      policies, peers and selectors in words (explain, causes)
    cases.py      generated cases on the e2e suite's model, reproducible from a seed (conformance)

Import from here: `from cni_lab import policy; policy.parse(...)`.
"""

from cni_lab.policy.evaluator import Evaluator, probes, truth_table
from cni_lab.policy.objects import (API_VERSION, KIND, OPERATORS, POLICY_TYPES, PROTOCOLS, IPBlock, Peer, Policy,
                                    PortRange, Requirement, Rule, Selector, Workload)
from cni_lab.policy.reading import parse
from cni_lab.policy.words import describe

__all__ = ["API_VERSION", "KIND", "OPERATORS", "POLICY_TYPES", "PROTOCOLS", "Evaluator", "IPBlock", "Peer", "Policy",
           "PortRange", "Requirement", "Rule", "Selector", "Workload", "describe", "parse", "probes", "truth_table"]
