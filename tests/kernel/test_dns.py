"""Cluster DNS against the real kernel: dnsmasq behind kube-dns in the DNS pod, every pod's
resolv.conf as `ip netns exec` shows it, asked with dig and glibc (getent) from the pods, on
every data plane with Services; the stub resolver of `check` held equal to glibc's; a policy
that blocks DNS; records that follow `fault pod-down`; `down` leaving nothing.

One lab per data plane (the first test), and two more host-gw labs (policy, faults and down)."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from helpers import ns_of, run_in

from cni_lab import dns_records, lifecycle, names, state
from cni_lab.cluster import Lab
from cni_lab.dns_message import ResolvConf
from cni_lab.probe import dns_probes

MakeLab = Callable[..., Lab]


def doc(dataplane: str, **extra: Any) -> dict[str, Any]:
    """web (ClusterIP, port http) over web1 and web2; db, headless in namespace x, over db1 and db2."""
    return {"dataplane": dataplane, "namespaces": {"x": {}},
            "nodes": [{"name": "node1", "pods": [{"name": "web1", "labels": {"app": "web"}}, "client",
                                                 {"name": "db2", "namespace": "x", "labels": {"app": "db"}}]},
                      {"name": "node2", "pods": [{"name": "web2", "labels": {"app": "web"}},
                                                 {"name": "db1", "namespace": "x", "labels": {"app": "db"}}]}],
            "services": [{"name": "web", "selector": {"app": "web"},
                          "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
                         {"name": "db", "namespace": "x", "clusterIP": "None", "selector": {"app": "db"},
                          "ports": [{"name": "pg", "port": 5432}]}],
            **extra}


def dig(lab: Lab, pod: str, *args: str) -> tuple[str, list[str]]:
    """dig from inside the pod (its resolv.conf names kube-dns): the status and the short answers."""
    done = run_in(ns_of(lab, pod), "dig", "+time=2", "+tries=1", *args)
    status = re.search(r"status: (\w+)", done.stdout)
    short = run_in(ns_of(lab, pod), "dig", "+time=2", "+tries=1", "+short", *args).stdout.split("\n")
    return (status.group(1) if status else "no answer"), sorted(line for line in short if line)


def getent(lab: Lab, pod: str, name: str) -> list[str]:
    """glibc's answer (getaddrinfo, IPv4) as `getent ahostsv4` prints it: its addresses."""
    done = run_in(ns_of(lab, pod), "getent", "ahostsv4", name)
    return sorted({line.split()[0] for line in done.stdout.splitlines() if line.strip()})


def ip(lab: Lab, pod: str) -> str:
    return str(next(p.ip for p in lab.pods if p.id == pod))


@pytest.mark.parametrize("dataplane", ["host-gw", "vxlan", "bgp", "cni", "ebpf"])
def test_pods_resolve_services_pods_and_addresses_through_kube_dns(make_lab: MakeLab, dataplane: str) -> None:
    lab = make_lab(doc(dataplane))
    web = next(s for s in lab.services if s.spec.name == "web")
    kube_dns = lab.dns_service
    assert kube_dns is not None and str(kube_dns.cluster_ip) == "10.96.0.10"
    client = "node1/client"
    # every pod's /etc/resolv.conf, as `ip netns exec` (and `cni-lab exec`) shows it: kubelet's ClusterFirst
    shown = run_in(ns_of(lab, "node2/x/db1"), "cat", "/etc/resolv.conf", check=True).stdout
    assert "search x.svc.cluster.local svc.cluster.local cluster.local" in shown
    assert "nameserver 10.96.0.10" in shown and "options ndots:5" in shown

    assert dig(lab, client, "web.default.svc.cluster.local") == ("NOERROR", [str(web.cluster_ip)])        # 2.3.1
    assert dig(lab, client, "+tcp", "web.default.svc.cluster.local") == ("NOERROR", [str(web.cluster_ip)])
    assert dig(lab, client, "web.default.svc.cluster.local", "AAAA") == ("NOERROR", [])  # an IPv4 lab: no data
    assert dig(lab, client, "SRV", "_http._tcp.web.default.svc.cluster.local") == (
        "NOERROR", ["10 100 80 web.default.svc.cluster.local."])                                              # 2.3.2
    assert dig(lab, client, "-x", str(web.cluster_ip)) == ("NOERROR", ["web.default.svc.cluster.local."])   # 2.3.3
    db = sorted([ip(lab, "node1/x/db2"), ip(lab, "node2/x/db1")])
    assert dig(lab, client, "db.x.svc.cluster.local") == ("NOERROR", db)                                      # 2.4.1
    db1 = ip(lab, "node2/x/db1").replace(".", "-")
    assert dig(lab, client, "SRV", "_pg._tcp.db.x.svc.cluster.local")[1] == sorted(
        f"10 100 5432 {a.replace('.', '-')}.db.x.svc.cluster.local." for a in db)                              # 2.4.2
    assert dig(lab, client, "-x", ip(lab, "node2/x/db1")) == ("NOERROR", [f"{db1}.db.x.svc.cluster.local."])  # 2.4.3
    assert dig(lab, client, f"{db1}.x.pod.cluster.local") == ("NOERROR", [ip(lab, "node2/x/db1")])             # 2.6
    assert dig(lab, client, "TXT", "dns-version.cluster.local") == ("NOERROR", ['"1.0.1"'])                   # 2.2
    assert dig(lab, client, "nope.default.svc.cluster.local")[0] == "NXDOMAIN"
    assert dig(lab, client, "-x", "10.96.0.99")[0] == "NXDOMAIN"
    assert dig(lab, client, "example.com")[0] == "REFUSED"  # nothing leaves the machine: no upstream

    # glibc through the search path: short name, name.namespace, and check's resolver says the same
    conf = ResolvConf.parse(dns_records.resolv_conf(lab, next(p for p in lab.pods if p.id == client)))
    for name in ("web", "web.default", "db.x", "kube-dns.kube-system", "web.default.svc.cluster.local",
                 f"{db1}.x.pod.cluster.local", "nope", "web.x"):
        ours = dns_probes.lookup(ns_of(lab, client), conf, name, "UDP")
        assert sorted(set(ours.addresses)) == getent(lab, client, name), name
    assert getent(lab, client, "web") == [str(web.cluster_ip)]
    assert getent(lab, "node2/x/db1", "web.default") == [str(web.cluster_ip)]
    assert getent(lab, "node2/x/db1", "web") == []  # no web in x: NXDOMAIN at every step

    from cni_lab.probe import matrix

    result = matrix.run(lab)
    assert result.dns and all(d.ok for d in result.dns), [(d.src, d.name, d.problem) for d in result.dns if not d.ok]
    assert {d.src for d in result.dns} == {p.id for p in lab.pods} and {d.transport for d in result.dns} == {"UDP", "TCP"}
    assert result.passed


def test_a_dual_stack_lab_answers_aaaa_for_headless_endpoints_and_their_ptr(make_lab: MakeLab) -> None:
    """Dual-stack: Services are IPv4 SingleStack (kube-dns among them, as kubeadm makes it), a
    headless Service answers each endpoint in both families (2.4.1), and an IPv6 endpoint's PTR
    names it (2.4.3); check passes in both families with its dns rule."""
    lab = make_lab(doc("host-gw", networking={"clusterCIDR": ["10.244.0.0/16", "fd00:10:244::/56"],
                                              "underlay": ["192.168.1.0/24", "fd00:192:168:1::/64"]}))
    pods = {p.id: p for p in lab.pods}
    v6 = sorted(str(pods[i].ip6) for i in ("node1/x/db2", "node2/x/db1"))
    assert dig(lab, "node1/client", "db.x.svc.cluster.local", "AAAA") == ("NOERROR", v6)
    assert dig(lab, "node1/client", "db.x.svc.cluster.local", "A")[1] == sorted(
        str(pods[i].ip) for i in ("node1/x/db2", "node2/x/db1"))
    db1 = pods["node2/x/db1"].ip6
    assert db1 is not None
    assert dig(lab, "node1/client", "-x", str(db1))[1] == [f"{str(db1).replace(':', '-')}.db.x.svc.cluster.local."]
    assert dig(lab, "node1/client", "web.default.svc.cluster.local", "AAAA") == ("NOERROR", [])  # SingleStack IPv4
    from cni_lab.probe import matrix

    result = matrix.run(lab)
    assert result.passed and result.ipv6 is not None and result.dns and all(d.ok for d in result.dns)


def test_ndots_five_searches_a_four_dot_name_first_and_asks_a_five_dot_name_as_it_is(make_lab: MakeLab) -> None:
    """dnsmasq's log (log-queries) shows what glibc asked, in order: ndots:5 sends a pod record
    (4 dots) through the search list before asking it as written, the classic cost of ndots:5;
    a name with 5 dots is asked as written first."""
    lab = make_lab(doc("host-gw"))
    log = state.lab_dir(lab.name) / names.dns_file(lab.name, "log")
    pod_name = f"{ip(lab, 'node1/web1').replace('.', '-')}.default.pod.cluster.local"  # 4 dots
    assert getent(lab, "node1/client", pod_name) == [ip(lab, "node1/web1")]
    assert getent(lab, "node1/client", "a.b.c.d.e.example") == []  # 5 dots, nowhere
    assert getent(lab, "node1/client", "web") != []
    for _ in range(50):  # dnsmasq writes its log from a queue: a moment after it answers
        asked = re.findall(r"query\[A\] (\S+) from", log.read_text())
        if pod_name in asked and any(a.startswith("web.") for a in asked) and "a.b.c.d.e.example" in asked:
            break
        time.sleep(0.02)
    mine = [a for a in asked if a.startswith(pod_name)]
    assert mine[0] == pod_name + ".default.svc.cluster.local" and pod_name in mine  # searched, then as written
    five = [a for a in asked if a.startswith("a.b.c.d.e.example")]
    assert five[0] == "a.b.c.d.e.example"  # 5 dots: as written first, then the search list
    short = [a for a in asked if a.startswith("web.")]
    assert short[0] == "web.default.svc.cluster.local"  # the short name: the search list first


def test_a_policy_without_port_53_blocks_dns_and_check_says_so(make_lab: MakeLab) -> None:
    no_dns = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
              "metadata": {"name": "no-dns", "namespace": "default"},
              "spec": {"podSelector": {"matchLabels": {"role": "client"}}, "policyTypes": ["Egress"],
                       "egress": [{"ports": [{"protocol": "TCP", "port": 8080}]}]}}
    d = doc("host-gw", policies=[no_dns])
    d["nodes"][0]["pods"][1] = {"name": "client", "labels": {"role": "client"}}
    lab = make_lab(d)
    assert dig(lab, "node1/client", "web.default.svc.cluster.local")[0] == "no answer"
    assert dig(lab, "node1/web1", "web.default.svc.cluster.local")[0] == "NOERROR"
    from cni_lab.probe import matrix
    from cni_lab.report import json_junit

    result = matrix.run(lab)
    blocked = [d for d in result.dns if d.src == "node1/client"]
    assert blocked and all(d.ok and not d.allowed and not d.lookup.addresses for d in blocked)
    assert all("default/no-dns" in d.policy for d in blocked)
    assert all(d.reached for d in blocked if d.service == "default/web")  # the ClusterIP itself still works
    assert all(d.ok and d.allowed for d in result.dns if d.src != "node1/client")
    words = dns_probes.summary(blocked[0])
    assert "DNS blocked as the policies say" in words and "itself works" in words
    document = json_junit.check_json(result)
    assert document["rules"][-1]["rule"] == "dns" and document["rules"][-1]["passed"]


def test_records_follow_pod_down_and_heal_and_down_leaves_nothing(make_lab: MakeLab) -> None:
    from cni_lab import faults

    lab = make_lab(doc("host-gw"))
    both = sorted([ip(lab, "node1/x/db2"), ip(lab, "node2/x/db1")])
    assert dig(lab, "node1/client", "db.x.svc.cluster.local")[1] == both
    faults.inject(lab, "pod-down", ("node2/x/db1",))
    assert dig(lab, "node1/client", "db.x.svc.cluster.local")[1] == [ip(lab, "node1/x/db2")]  # the endpoint left
    faults.heal(lab)
    assert dig(lab, "node1/client", "db.x.svc.cluster.local")[1] == both

    folder = state.lab_dir(lab.name)
    pid = int((folder / names.dns_file(lab.name, "pid")).read_text())
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "dnsmasq"
    netns_dirs = [f"/etc/netns/{names.pod_netns(lab.name, p.node, p.name)}" for p in lab.pods]
    assert all(os.path.exists(f"{d}/resolv.conf") for d in netns_dirs)
    lifecycle.down(lab.name)
    assert not os.path.exists(f"/proc/{pid}") or Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    assert not any(os.path.exists(d) for d in netns_dirs)
    assert not folder.exists()
    leftover = [e for e in os.listdir("/etc/netns") if names.lab_of_netns(e) == lab.name] \
        if os.path.isdir("/etc/netns") else []
    assert leftover == []


def test_status_shows_kube_dns_dnsmasq_and_is_degraded_when_it_dies(make_lab: MakeLab) -> None:
    from cni_lab.report import json_junit, terminal

    lab = make_lab(doc("host-gw"))
    st = lifecycle.status(lab.name)
    assert st.dns is not None and st.dns[0] == "node1/kube-system/coredns" and st.dns[2] and st.healthy
    pid = st.dns[1]
    assert pid is not None and Path(f"/proc/{pid}/comm").read_text().strip() == "dnsmasq"
    daemons = json_junit.lab_json(lab, st)["daemons"]
    assert {"node": "node1", "pod": "node1/kube-system/coredns", "name": "dnsmasq", "pid": pid,
            "running": True} in daemons  # type: ignore[operator]
    os.kill(pid, 9)
    for _ in range(50):
        if not os.path.exists(f"/proc/{pid}") or Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z"):
            break
        time.sleep(0.02)
    dead = lifecycle.status(lab.name)
    assert dead.dns is not None and not dead.dns[2] and not dead.healthy
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(terminal.status_view(dead))
    assert "dnsmasq (kube-dns) in node1/kube-system/coredns: NOT RUNNING" in console.export_text()
