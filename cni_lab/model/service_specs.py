"""The `services` section: ClusterIP and NodePort Services, checked as the API server checks them
(ipam allocates the NodePorts not given)."""

from __future__ import annotations

from ipaddress import IPv4Address, ip_address
from typing import Any

from cni_lab.model.container_ports import is_port_number, port_name_refusal
from cni_lab.model.labels import is_dns_label
from cni_lab.model.namespaces import NAMESPACE_NAME, read_labels
from cni_lab.model.problems import Problems
from cni_lab.model.scenario import DEFAULT_NAMESPACE, NODE_PORT_RANGE, Labels, ServicePort, ServiceSpec

SERVICE_KEYS = ("name", "namespace", "selector", "pods", "ports", "type", "externalTrafficPolicy", "clusterIP")
SERVICE_PORT_KEYS = ("port", "targetPort", "protocol", "name", "nodePort")
SERVICE_TYPES = ("ClusterIP", "NodePort")
SERVICE_PROTOCOLS = ("TCP", "UDP", "SCTP")  # the API server's supportedPortProtocols; up refuses SCTP where the kernel has none


def read_services(problems: Problems, value: Any, namespaces: set[str]) -> tuple[ServiceSpec, ...]:
    """`services: [{name, namespace, selector | pods, ports: [{name, port, targetPort, protocol,
    nodePort}], type, externalTrafficPolicy}]`; `namespaces`: the lab's. A targetPort is a number
    or the name of a port the endpoint pods declare."""
    if value is None:
        return ()
    if not isinstance(value, list):
        problems.add("services", "must be a list of Services")
        return ()
    out: list[ServiceSpec] = []
    taken: set[tuple[str, int]] = set()  # (protocol, nodePort) given explicitly
    for key, raw in problems.mappings(value, "services", SERVICE_KEYS):
        spec = _service(problems, raw, key, taken, namespaces)
        if spec is None:
            continue
        if any(s.name == spec.name and s.namespace == spec.namespace for s in out):
            problems.add(f"{key}.name", f"{spec.namespace}/{spec.name} is defined twice")
            continue
        out.append(spec)
    return tuple(out)


def _service(problems: Problems, raw: dict[str, Any], key: str, taken: set[tuple[str, int]],
             namespaces: set[str]) -> ServiceSpec | None:
    name = raw.get("name")
    if not isinstance(name, str) or not NAMESPACE_NAME.fullmatch(name):  # fullmatch: "web\n" is no name
        problems.add(f"{key}.name", f"{name!r} is not a valid Service name (a DNS label)")
        return None
    namespace = raw.get("namespace", DEFAULT_NAMESPACE)
    if not isinstance(namespace, str) or namespace not in namespaces:  # a list or mapping: no name
        problems.add(f"{key}.namespace", f"{namespace!r} is not a namespace of the lab")
        return None
    kind = raw.get("type", "ClusterIP")
    if kind not in SERVICE_TYPES:
        problems.add(f"{key}.type", f"{kind!r} is not one of {', '.join(SERVICE_TYPES)}"
                     + (" (LoadBalancer needs a cloud's load balancer: not built)" if kind == "LoadBalancer" else ""))
        return None
    policy = raw.get("externalTrafficPolicy")
    if policy is not None and kind == "ClusterIP":
        problems.add(f"{key}.externalTrafficPolicy", "may only be set for externally-accessible Services "
                     "(type NodePort), as the API server says")
        return None
    if policy not in (None, "Cluster", "Local"):
        problems.add(f"{key}.externalTrafficPolicy", f"{policy!r} is not Cluster or Local")
        return None
    selector: Labels = ()
    pods: Any = ()
    if "pods" in raw:
        if "selector" in raw:
            problems.add(key, "give a selector or pods, not both")
            return None
        pods = raw["pods"]
        if not isinstance(pods, list) or not pods or not all(isinstance(p, str) and "/" in p for p in pods):
            problems.add(f"{key}.pods", "must be a list of pods as node/pod, e.g. [node1/web, node2/web]")
            return None
    else:
        selector = read_labels(problems, raw.get("selector"), f"{key}.selector")
        if not selector:
            problems.add(f"{key}.selector", "required: the labels of the pods that serve it (or pods: [node1/web])")
            return None
    given = raw.get("clusterIP")
    headless = given == "None"  # the API's word for a headless Service (ClusterIPNone)
    cluster_ip: IPv4Address | None = None
    if given is not None and not headless:
        try:
            address = ip_address(str(given))
        except ValueError:
            address = None
        if not isinstance(address, IPv4Address):
            problems.add(f"{key}.clusterIP", f"{given!r} is not an IPv4 address or None (a headless Service)")
            return None
        cluster_ip = address  # ipam holds it against the Service CIDR and the others
    if headless and kind != "ClusterIP":
        problems.add(f"{key}.clusterIP", f"may not be None for {kind} Services, as the API server says "
                     "(a headless Service has no ClusterIP to reach on a node port)")
        return None
    ports = _ports(problems, raw, key, kind, taken)
    if not ports:
        if not raw.get("ports"):  # (ports given but each refused: their own lines say why)
            problems.add(f"{key}.ports", "a Service needs at least one port")
        return None
    return ServiceSpec(name, namespace, selector, ports, kind, policy or "Cluster", tuple(pods), cluster_ip, headless)


def _ports(problems: Problems, raw: dict[str, Any], key: str, kind: str,
           taken: set[tuple[str, int]]) -> tuple[ServicePort, ...]:
    """A Service's ports; `taken`: the nodePorts given so far in the lab, which this adds to."""
    ports = []
    seen: set[tuple[str, int]] = set()
    given = raw.get("ports") or []
    names: set[str] = set()
    for at, p in problems.mappings(given, f"{key}.ports", SERVICE_PORT_KEYS):
        port, target, proto = p.get("port"), p.get("targetPort", p.get("port")), p.get("protocol", "TCP")
        name = _port_name(problems, p, at, len(given) > 1, names)
        if name is None:
            continue
        if isinstance(target, str):  # ValidatePortNumOrName: a name each endpoint pod's ports resolve
            refusal = port_name_refusal(target)
            if refusal is not None:
                problems.add(f"{at}.targetPort", refusal)
                continue
        if not is_port_number(port) or not (isinstance(target, str) or is_port_number(target)):
            problems.add(at, f"port {port!r} and targetPort {target!r} must be port numbers")
            continue
        if proto not in SERVICE_PROTOCOLS:
            problems.add(f"{at}.protocol", f"{proto!r} is not TCP, UDP or SCTP")
            continue
        if (proto, port) in seen:
            problems.add(f"{at}.port", f"{port}/{proto} is given twice")
            continue
        seen.add((str(proto), int(port)))  # type: ignore[arg-type]
        node_port = p.get("nodePort")
        if node_port is not None:
            low, high = NODE_PORT_RANGE
            if kind != "NodePort":
                problems.add(f"{at}.nodePort", "may not be used when type is ClusterIP")
                continue
            if not isinstance(node_port, int) or isinstance(node_port, bool) or not low <= node_port <= high:
                problems.add(f"{at}.nodePort", f"{node_port!r} is not in the valid range {low}-{high}")
                continue
            if (proto, node_port) in taken:
                problems.add(f"{at}.nodePort", f"{node_port}/{proto}: provided port is already allocated")
                continue
            taken.add((proto, node_port))
        ports.append(ServicePort(int(port), target if isinstance(target, str) else int(target), str(proto),  # type: ignore[arg-type]
                                 node_port, name))
    return tuple(ports)


def _port_name(problems: Problems, p: dict[str, Any], at: str, required: bool, names: set[str]) -> str | None:
    """A port's name as validateServicePort takes it (kubernetes pkg/apis/core/validation): with
    more than one port, every port names itself (kube-proxy names the port's chains after it, so two
    ports never share one); a name is an RFC 1123 label, unique in the Service. None: refused."""
    if p.get("name") in (None, ""):  # len(sp.Name) == 0: the API takes "" for no name
        if required:
            problems.add(f"{at}.name", "required: a Service with more than one port names every port "
                         "(the API server's validateServicePort)")
            return None
        return ""
    name = p["name"]
    if not is_dns_label(name):
        problems.add(f"{at}.name", f"{name!r} is not a DNS label (at most 63 of a-z, 0-9 and '-', "
                     "a letter or digit at each end)")
        return None
    if name in names:
        problems.add(f"{at}.name", f"{name!r} is given twice: a Service's port names are unique")
        return None
    names.add(name)
    return name
