"""network-config-analyzer (NCA, np-guard/network-config-analyzer on PyPI, IBM) as an independent
NetworkPolicy evaluator: the e2e model's namespaces and pods go in as the Kubernetes objects NCA
reads (`nca --ns_list ... --pod_list ...`), a case's policies as the documents `nca --connectivity`
reads, and out comes, per ordered pod pair and (protocol, port), whether NCA allows a new
connection.

Driven in-process through the same steps `nca --connectivity` takes (nca/nca_cli.py → ResourcesHandler
→ NetworkConfig.allowed_connections, as ConnectivityMapQuery.compute_connectivity_output calls it
with PolicyConnectionsFilter.only_all_allowed_connections()), with one query object per pair and
probe built once: a case costs a policy parse and one containment test per cell, not a process
and a text parse. `test_the_driver_answers_as_the_command_line_does` holds the driver to the
`nca` command's own `txt_no_fw_rules` output.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any, Iterable, Mapping, Sequence

from nca.CoreDS.ConnectivityProperties import ConnectivityProperties
from nca.CoreDS.Peer import BasePeerSet, PeerSet
from nca.CoreDS.PortSet import PortSet
from nca.CoreDS.ProtocolNameResolver import ProtocolNameResolver
from nca.CoreDS.ProtocolSet import ProtocolSet
from nca.NetworkConfig.NetworkConfig import NetworkConfig
from nca.NetworkConfig.PoliciesFinder import PoliciesFinder
from nca.NetworkConfig.ResourcesHandler import ResourcesParser
from nca.Resources.PolicyResources.NetworkPolicy import PolicyConnectionsFilter
from nca.Utils.NcaLogger import NcaLogger

Probe = tuple[str, "int | None"]
# (namespace, name, labels), or with its container ports ({name, containerPort, protocol} each) last
PodEntry = Sequence[Any]


class Refused(Exception):
    """NCA refused a policy as invalid (its parser raises SyntaxError)."""


def namespace_list(labels: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "NamespaceList",
            "items": [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": dict(lab)}}
                      for ns, lab in labels.items()]}


def pod_list(pods: Iterable[PodEntry]) -> dict[str, Any]:
    """(namespace, name, labels[, container ports]) → a PodList as `kubectl get pods -o yaml` gives
    it; NCA reads the ports as named ports (TopologyObjectsFinder: container.ports → add_named_port)."""
    return {"apiVersion": "v1", "kind": "PodList", "items": [_pod(*entry) for entry in pods]}


def _pod(namespace: str, name: str, labels: Mapping[str, str], ports: Iterable[Mapping[str, Any]] = ()) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
            "spec": {"containers": [{"name": "serve", "image": "agnhost", "ports": [dict(p) for p in ports]}]}}


class Oracle:
    """NCA's answers for one set of namespaces and pods; `allowed(policies)` per case."""

    def __init__(self, namespaces: Mapping[str, Mapping[str, str]],
                 pods: Iterable[PodEntry], probes: Iterable[Probe]) -> None:
        pods, probes = list(pods), list(probes)
        NcaLogger().mute()  # its warnings ("policyTypes is missing") go to stdout otherwise
        BasePeerSet.reset()  # the singleton of every peer NCA has seen, as nca_cli.run_args resets it
        parser = ResourcesParser()
        parser.ns_finder.parse_yaml_code_for_ns(namespace_list(namespaces))
        parser.pods_finder.namespaces_finder = parser.ns_finder
        parser.pods_finder.add_eps_from_yaml(pod_list(pods))
        self.peers = parser.build_peer_container()
        self.pods = sorted(self.peers.get_all_peers_group(), key=lambda p: p.full_name())
        self.probes = tuple(probes)
        self.queries = {(s.full_name(), d.full_name(), proto, port): self._query(s, d, proto, port)
                        for s in self.pods for d in self.pods if s is not d for proto, port in self.probes}
        self.base = BasePeerSet.instance
        self.made_from = (namespaces, pods, probes)

    @staticmethod
    def _query(src: Any, dst: Any, protocol: str, port: int | None) -> ConnectivityProperties:
        cube: dict[str, Any] = {"src_peers": PeerSet({src}), "dst_peers": PeerSet({dst}),
                                "protocols": ProtocolSet.get_protocol_set_with_single_protocol(
                                    ProtocolNameResolver.get_protocol_number(protocol))}
        if port is not None:
            ports = PortSet()
            ports.add_port(port)
            cube["dst_ports"] = ports
        return ConnectivityProperties.make_conn_props_from_dict(cube)

    def config(self, policies: Iterable[Mapping[str, Any]]) -> NetworkConfig:
        finder = PoliciesFinder()
        finder.set_peer_container(self.peers)
        for document in policies:
            finder.parse_yaml_code_for_policy(dict(document), "case")
        try:
            finder.parse_policies_in_parse_queue()
        except SyntaxError as e:
            raise Refused(str(e)) from None
        return NetworkConfig("case", self.peers, finder)

    def allowed(self, policies: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str, str, int | None], bool]:
        """(from ns/pod, to ns/pod, protocol, port) → allowed, for every ordered pair of two pods."""
        if BasePeerSet.instance is not self.base:  # another NCA run (nca_main resets the singleton) since
            self.__init__(*self.made_from)  # type: ignore[misc]  # its peers were indexed: index them again
        with contextlib.redirect_stdout(io.StringIO()):  # its named-port warnings are print()s, not its logger's
            conns = self.config(policies).allowed_connections(
                res_conns_filter=PolicyConnectionsFilter.only_all_allowed_connections()).all_allowed_conns
        return {cell: query.contained_in(conns) for cell, query in self.queries.items()}
