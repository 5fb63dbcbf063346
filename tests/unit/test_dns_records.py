"""Cluster DNS without a kernel: the dns section, the DNS pod and kube-dns Service a lab with
Services gets, headless Services, the records (kubernetes/dns docs/specification.md), dnsmasq's
config, every pod's resolv.conf and the plan's steps."""

from __future__ import annotations

import pytest

from cni_lab import dns_records, names, plan
from cni_lab.errors import LabError
from cni_lab.steps import StartDnsmasq, WriteFile, WriteResolvConf

from labs import make_lab, pod

WEB = {"name": "web", "selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
HEADLESS = {"name": "db", "namespace": "x", "clusterIP": "None", "selector": {"app": "db"},
            "ports": [{"name": "pg", "port": 5432, "targetPort": 15432}]}
NODES = [{"name": "n1", "pods": [pod("a", labels={"app": "web"}), "b"]},
         {"name": "n2", "pods": [pod("c", "x", {"app": "db"}), pod("d", "x", {"app": "db"})]}]


def dns_lab(**keys: object):
    return make_lab(NODES, name="d", **{"namespaces": {"x": {}}, "services": [WEB, HEADLESS], **keys})


def test_a_lab_with_services_gets_coredns_and_kube_dns_at_the_tenth_address() -> None:
    lab = dns_lab()
    assert lab.dns is not None and lab.dns.cluster_domain == "cluster.local"
    svc = lab.dns_service
    assert svc is not None and svc.qualified == "kube-system/kube-dns" and str(svc.cluster_ip) == "10.96.0.10"
    assert [(p.name, p.port, p.protocol) for p in svc.spec.ports] == [("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")]
    (server,) = svc.endpoints
    # a pod like any other: the first node's next address after its own pods (host-local's order)
    assert server.id == "n1/kube-system/coredns" and str(server.ip) == "10.244.0.4"
    assert dict(server.labels) == {"k8s-app": "kube-dns"} and server.namespace == "kube-system"
    assert [str(s.cluster_ip) for s in lab.services] == ["10.96.0.2", "10.96.0.10"]  # the headless one has none
    assert [h.qualified for h in lab.headless_services] == ["x/db"]


def test_dns_false_and_a_lab_without_services_have_none() -> None:
    off = dns_lab(dns=False)
    assert off.dns is None and off.dns_service is None and len(off.pods) == 4
    assert make_lab(NODES, namespaces={"x": {}}).dns is None
    assert not any(isinstance(s, StartDnsmasq) for s in plan.build(off).steps)


@pytest.mark.parametrize("value,words", [
    ({"clusterDomain": "Cluster.Local"}, "dns.clusterDomain: 'Cluster.Local' is not a DNS name"),
    ({"clusterDomain": "a..b"}, "dns.clusterDomain: 'a..b' is not a DNS name"),
    ({"clusterDomain": "x" * 64 + ".local"}, "is not a DNS name"),
    ({"domain": "a"}, "dns.domain"),
    ("yes", "dns: 'yes' is not true, false or a mapping"),
])
def test_the_dns_section_is_refused_in_one_line(value: object, words: str) -> None:
    with pytest.raises(LabError) as refused:
        dns_lab(dns=value)
    assert any(words in p for p in refused.value.problems) and all("\n" not in p for p in refused.value.problems)


def test_a_configured_cluster_domain_names_everything() -> None:
    lab = dns_lab(dns={"clusterDomain": "lab.example."})
    assert lab.dns is not None and lab.dns.cluster_domain == "lab.example"
    conf = dns_records.resolv_conf(lab, lab.pods[0])
    assert "search default.svc.lab.example svc.lab.example lab.example" in conf


def test_the_names_kube_dns_owns_are_refused_to_the_scenario() -> None:
    with pytest.raises(LabError) as refused:
        dns_lab(services=[WEB, {**WEB, "name": "other", "clusterIP": "10.96.0.10"}])
    assert any("services[1].clusterIP" in p and "cluster DNS" in p for p in refused.value.problems)
    with pytest.raises(LabError):
        make_lab(NODES, namespaces={"x": {}, "kube-system": {}},
                 services=[{**WEB, "name": "kube-dns", "namespace": "kube-system"}])


def test_headless_and_given_cluster_ips_as_the_api_server_takes_them() -> None:
    with pytest.raises(LabError) as refused:
        dns_lab(services=[{**HEADLESS, "type": "NodePort"}])
    assert any("may not be None for NodePort" in p for p in refused.value.problems)
    with pytest.raises(LabError) as refused:
        dns_lab(services=[{**WEB, "clusterIP": "10.1.0.5"}]).services  # noqa: B018 - worked out when asked
    assert any("10.1.0.5 is not in the range 10.96.0.0/12" in p for p in refused.value.problems)
    lab = dns_lab(services=[{**WEB, "clusterIP": "10.96.0.2"}, {**WEB, "name": "next"}])
    assert [str(s.cluster_ip) for s in lab.services] == ["10.96.0.2", "10.96.0.3", "10.96.0.10"]


def test_the_records_follow_the_specification() -> None:
    lab = dns_lab()
    shown = {r.describe() for r in dns_records.records(lab, lab.services, lab.headless_services)}
    assert {
        'dns-version.cluster.local. TXT "1.0.1"',                                                          # 2.2
        "web.default.svc.cluster.local. A 10.96.0.2",                                                      # 2.3.1
        "_http._tcp.web.default.svc.cluster.local. SRV 10 100 80 web.default.svc.cluster.local.",          # 2.3.2
        "2.0.96.10.in-addr.arpa. PTR web.default.svc.cluster.local.",                                      # 2.3.3
        "db.x.svc.cluster.local. A 10.244.1.2", "db.x.svc.cluster.local. A 10.244.1.3",                    # 2.4.1
        "10-244-1-2.db.x.svc.cluster.local. A 10.244.1.2",
        "_pg._tcp.db.x.svc.cluster.local. SRV 10 100 15432 10-244-1-2.db.x.svc.cluster.local.",            # 2.4.2
        "2.1.244.10.in-addr.arpa. PTR 10-244-1-2.db.x.svc.cluster.local.",                                 # 2.4.3
        "10-244-0-2.default.pod.cluster.local. A 10.244.0.2", "10-244-1-3.x.pod.cluster.local. A 10.244.1.3",  # 2.6
        "_dns._udp.kube-dns.kube-system.svc.cluster.local. SRV 10 100 53 kube-dns.kube-system.svc.cluster.local.",
    } <= shown
    assert not any(r.startswith("_http._tcp.db") for r in shown)  # unnamed ports: no SRV (none here), named only


def test_a_pod_taken_down_leaves_the_headless_answer() -> None:
    lab = dns_lab()
    gone = frozenset({"n2/x/c"})
    after = dns_records.records(lab, lab.services_without(gone), lab.headless_without(gone))
    assert [r.value for r in after if r.name == "db.x.svc.cluster.local"] == ["10.244.1.3"]


def test_dnsmasq_reads_nothing_of_the_host_and_forwards_nothing() -> None:
    lab = dns_lab(outside={})
    conf = dns_records.dnsmasq_conf(lab, lab.services, lab.headless_services).splitlines()
    for line in ("no-resolv", "no-hosts", "bind-interfaces", "listen-address=10.244.0.4", "local=/cluster.local/",
                 "local=/96.10.in-addr.arpa/", "local=/111.10.in-addr.arpa/", "local=/244.10.in-addr.arpa/",
                 "local-ttl=5", "host-record=example.test,www.example.test,198.51.100.10",
                 "host-record=web.default.svc.cluster.local,10.96.0.2",
                 "srv-host=_pg._tcp.db.x.svc.cluster.local,10-244-1-2.db.x.svc.cluster.local,15432,10,100",
                 "txt-record=dns-version.cluster.local,1.0.1"):
        assert line in conf, line
    assert not any(line.startswith(("server=", "resolv-file", "conf-dir", "addn-hosts")) for line in conf)
    # dnsmasq answers a PTR with an address's first host-record: the headless endpoint's name, then the pod's
    first = next(i for i, line in enumerate(conf) if line.endswith(",10.244.1.2"))
    assert conf[first] == "host-record=10-244-1-2.db.x.svc.cluster.local,db.x.svc.cluster.local,10.244.1.2"
    assert "example.test" not in "".join(dns_records.dnsmasq_conf(dns_lab(), [], []))  # no outside host: REFUSED


def test_every_pod_gets_kubelets_cluster_first_resolv_conf() -> None:
    lab = dns_lab()
    c = next(p for p in lab.pods if p.id == "n2/x/c")
    assert dns_records.resolv_conf(lab, c).splitlines()[1:] == [
        "search x.svc.cluster.local svc.cluster.local cluster.local", "nameserver 10.96.0.10", "options ndots:5"]
    steps = plan.build(lab).steps
    written = {s.netns: s for s in steps if isinstance(s, WriteResolvConf)}
    assert set(written) == {names.pod_netns(lab.name, p.node, p.name) for p in lab.pods}
    assert "mkdir -p /etc/netns/cnilab-d.n2.x.c && write /etc/netns/cnilab-d.n2.x.c/resolv.conf" in written[
        "cnilab-d.n2.x.c"].describe()
    start = [s for s in steps if isinstance(s, StartDnsmasq)]
    assert len(start) == 1 and start[0].netns == "cnilab-d.n1.kube-system.coredns"
    assert start[0].conf == "dns/names.d.conf" and start[0].pidfile == "dns/names.d.pid"
    conf = next(s for s in steps if isinstance(s, WriteFile) and s.path == "dns/names.d.conf")
    assert steps.index(conf) < steps.index(start[0])


def test_ebpf_balances_kube_dns_over_udp_and_tcp() -> None:
    from cni_lab.steps import BpfServices

    lab = make_lab(NODES, name="e", dataplane="ebpf", namespaces={"x": {}}, services=[WEB])
    step = next(s for s in plan.build(lab).steps if isinstance(s, BpfServices))
    dns = {(str(f.address), f.port, f.protocol, len(f.backend_ids)) for f in step.frontends if f.service.startswith("kube-system/")}
    assert dns == {("10.96.0.10", 53, "UDP", 1), ("10.96.0.10", 53, "TCP", 1)}
