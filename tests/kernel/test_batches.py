"""Several netlink requests in one sendmsg (executor/apply.py's Batches, rtnl.Rtnl.batch/flush):
the kernel answers each, and every error is still reported against its own step."""

from __future__ import annotations

import dataclasses
import errno
from ipaddress import IPv4Address, IPv4Network

import pytest

from cni_lab import catalog, model, names, plan
from cni_lab.errors import LabError
from cni_lab.executor import apply
from cni_lab.kernel import netns
from cni_lab.kernel.rtnl import Rtnl
from cni_lab.steps import AddAddress, AddRoute


def test_a_batch_answers_each_request_in_order_with_a_lookup_in_between() -> None:
    ns = "cnilab-tbatch.one"
    assert netns.create(ns)
    try:
        rtnl = Rtnl(ns)
        rtnl.sock.settimeout(5)  # an answer matched wrongly fails the test instead of hanging it
        rtnl.batch()
        rtnl.add_address(1, IPv4Address("127.0.0.2"), 8)  # fine
        lo = rtnl.index("lo")  # sent at once, between the queued requests (its own sequence number)
        rtnl.add_route(IPv4Network("10.9.0.0/24"), lo, gateway=IPv4Address("10.99.0.1"))  # no way to 10.99.0.1
        rtnl.add_address(1, IPv4Address("127.0.0.2"), 8)  # there already
        answers = rtnl.flush()
        rtnl.close()
        assert [a.errno if a else None for a in answers] == [None, errno.ENETUNREACH, errno.EEXIST]
    finally:
        netns.remove(ns)


def test_a_failing_step_in_a_batch_is_named_and_nothing_is_left() -> None:
    lab = catalog.resolve(model.load_document(
        {"name": "tbatch", "dataplane": "host-gw", "nodes": [{"name": "node", "count": 2, "pods": 3}]}, "<test>"))
    built = plan.build(lab)
    pod_ns = names.pod_netns(lab.name, "node1", "pod-2")
    # after the pod's address, a route through a gateway it cannot reach, then more of the batch
    at = next(i for i, s in enumerate(built.steps) if isinstance(s, AddAddress) and s.netns == pod_ns)
    bad = AddRoute(pod_ns, IPv4Network("10.9.0.0/24"), "eth0", via=IPv4Address("10.99.0.1"))
    broken = dataclasses.replace(built, steps=(*built.steps[:at + 1], bad, *built.steps[at + 1:]))
    before = set(netns.listing())
    with pytest.raises(LabError) as raised:
        apply.apply(broken)
    assert str(raised.value) == f"{bad.describe()}: Network is unreachable"
    assert set(netns.listing()) == before  # the transaction rolled back
