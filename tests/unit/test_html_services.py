"""The HTML report's Services table and per-node NAT, from check's and explain's JSON."""

from __future__ import annotations

from cni_lab.report import html


def test_the_report_lists_service_probes_and_the_nat_each_node_does() -> None:
    check = {"passed": False, "durationSeconds": 1.0, "rules": [], "endpoints": [], "pairs": [], "families": [4],
             "services": [
                 {"kind": "clusterIP", "src": "node1/client", "service": "default/web", "port": 80, "via": None,
                  "externalTrafficPolicy": None, "tries": 2, "ok": True, "problem": None,
                  "answers": [{"answeredBy": "node2/web2", "observedSource": "10.244.0.3"}]},
                 {"kind": "nodePort", "src": "outside", "service": "default/solo", "port": 30081, "via": "node1",
                  "externalTrafficPolicy": "Local", "tries": 2, "ok": False, "problem": "answered by node2/solo",
                  "answers": []},
                 {"kind": "clusterIP", "src": "node1/client", "service": "default/dns", "port": 53, "via": None,
                  "externalTrafficPolicy": None, "tries": 1, "ok": True, "problem": None, "protocol": "UDP",
                  "portName": "dns", "targetPort": 5353, "unconfirmed": 0, "busy": [],
                  "answers": [{"answeredBy": "node2/dns", "observedSource": "10.244.0.3", "reachedPort": 5353}]}]}
    facts = {"dataplane": "host-gw", "nodes": [{
        "name": "node1", "underlay": {"address": "192.168.1.2"}, "routes": [], "pods": [],
        "nat": {"masqueradeTable": "ip flannel-ipv4",
                "masquerade": [{"chain": "postrtg", "rule": "ip saddr 10.244.0.0/16 masquerade", "meaning": "leaves"}],
                "services": ["ClusterIP 10.96.0.2:80/tcp (default/web) → DNAT"]}}]}
    page = html.page("lab", "<svg/>", check, facts)
    assert '<table class="rules" id="services">' in page
    assert "node2/web2 (10.244.0.3)" in page and "default/solo :30081/TCP on node1 (Local)" in page
    assert "✗ answered by node2/solo" in page
    assert "default/dns:dns :53/UDP" in page and "node2/dns (10.244.0.3) on :5353" in page
    assert "postrtg: ip saddr 10.244.0.0/16 masquerade" in page and "ClusterIP 10.96.0.2:80/tcp (default/web) → DNAT" in page
