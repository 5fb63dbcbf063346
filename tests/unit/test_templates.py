"""Messages encoded once and filled in are byte for byte what pyroute2 encodes, for every kind of
message `up` sends, with random values (kernel/templates.py)."""

from __future__ import annotations

import random
import socket
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any, Callable

import pytest

from cni_lab.kernel import rtnl, templates
from cni_lab.kernel.rtnl import Rtnl

pytest.importorskip("pyroute2")


class _NoSocket:
    def bind(self, address: object) -> None:
        pass


def _queued(call: Callable[[Rtnl], None]) -> bytes:
    r = Rtnl("test", _NoSocket())  # type: ignore[arg-type]
    r.seq = random.randrange(1, 1 << 31)
    r.batch()
    call(r)
    assert r._queued is not None and len(r._queued) == 1
    assert int.from_bytes(r._queued[0][8:12], "little") == r.seq  # each request its own sequence number
    return r._queued[0]


def _pyroute2(build: Callable[..., Any], msg_type: int, flags: int, sent: bytes, **plain: Any) -> bytes:
    seq = int.from_bytes(sent[8:12], "little")
    return templates.encode(build, msg_type, flags, seq, **plain)


def _mac() -> str:
    return ":".join(f"{random.randrange(256):02x}" for _ in range(6))


def _v4() -> IPv4Address:
    return IPv4Address(random.randrange(1, 1 << 32))


def _v6() -> IPv6Address:
    return IPv6Address(random.randrange(1, 1 << 128))


def _ifname() -> str:
    return "veth" + "".join(random.choice("0123456789abcdef") for _ in range(8))


CASES: dict[str, Callable[[], None]] = {}


def case(fn: Callable[[], None]) -> Callable[[], None]:
    CASES[fn.__name__] = fn
    return fn


@case
def veth() -> None:  # AddVeth: a pod's pair, peer into the pod's namespace, on the bridge, up; or plain
    name, fd, mtu = _ifname(), random.randrange(3, 1000), random.randrange(68, 9000)
    master = random.choice([None, random.randrange(2, 5000)])
    mac, up = random.choice([None, _mac()]), random.choice([True, False])
    got = _queued(lambda r: r.add_veth(name, "eth0", fd, mtu=mtu, master=master, up=up, mac=mac))
    assert got == _pyroute2(rtnl.veth_msg, rtnl.RTM_NEWLINK, rtnl.CREATE, got, ifname=name, peer_ifname="eth0",
                            peer_ns_fd=fd, mtu=mtu, peer_mtu=mtu, master=master, up=up, mac=mac)


@case
def bridge() -> None:  # AddBridge
    mtu = random.randrange(68, 9000)
    got = _queued(lambda r: r.add_link("cni0", "bridge", mtu=mtu))
    assert got == _pyroute2(rtnl.link_msg, rtnl.RTM_NEWLINK, rtnl.CREATE, got, ifname="cni0", kind="bridge", mtu=mtu)


@case
def vxlan() -> None:  # AddVxlan: flannel.1 or flannel-v6.1, with its own MAC
    local = random.choice([_v4(), _v6()])
    mtu, vni, port, link, mac = random.randrange(68, 9000), random.randrange(1, 1 << 24), random.randrange(1, 65535), \
        random.randrange(2, 100), random.choice([None, _mac()])
    learning = random.choice([True, False])
    got = _queued(lambda r: r.add_vxlan("flannel.1", mtu=mtu, vni=vni, local=local, port=port, learning=learning,
                                        link=link, address=mac))
    assert got == _pyroute2(rtnl.vxlan_msg, rtnl.RTM_NEWLINK, rtnl.CREATE, got, ifname="flannel.1", mtu=mtu, vni=vni,
                            local=local, port=port, learning=int(learning), link=link, address=mac)


@case
def flow_vxlan() -> None:  # AddFlowVxlan: cilium_vxlan, external
    data = [("IFLA_VXLAN_COLLECT_METADATA", 1), ("IFLA_VXLAN_PORT", 8472), ("IFLA_VXLAN_LEARNING", 0)]
    mtu = random.randrange(68, 9000)
    got = _queued(lambda r: r.add_link("cilium_vxlan", "vxlan", mtu=mtu, data=data))
    assert got == _pyroute2(rtnl.link_msg, rtnl.RTM_NEWLINK, rtnl.CREATE, got, ifname="cilium_vxlan", kind="vxlan",
                            mtu=mtu, data=data)


@case
def link_up() -> None:  # LinkUp, with or without a master, NOARP
    index, master = random.randrange(1, 1 << 20), random.choice([None, random.randrange(2, 5000)])
    up, noarp = random.choice([True, False, None]), random.choice([True, False])
    flags = rtnl.NLM_F_REQUEST | rtnl.NLM_F_ACK
    got = _queued(lambda r: r.set_link(index, up=up, master=master, noarp=noarp))
    assert got == _pyroute2(rtnl.set_link_msg, rtnl.RTM_NEWLINK, flags, got, index=index, up=up, master=master, noarp=noarp)


@case
def address() -> None:  # AddAddress, both families
    ip = random.choice([_v4(), _v6()])
    index, prefixlen = random.randrange(1, 1 << 20), random.randrange(0, 33 if ip.version == 4 else 129)
    got = _queued(lambda r: r.add_address(index, ip, prefixlen))
    assert got == _pyroute2(rtnl.address_msg, rtnl.RTM_NEWADDR, rtnl.CREATE, got, index=index, ip=ip, prefixlen=prefixlen)


@case
def route() -> None:  # AddRoute: default or not, via or not, onlink, scope link, src, mtu; both families
    six = random.choice([True, False])
    bits = 128 if six else 32
    dst = (IPv6Network if six else IPv4Network)((random.randrange(1 << bits) >> (bits - 48) << (bits - 48) if six
                                                else random.randrange(1 << 32) >> 8 << 8, random.choice([0, 24, 48][: 3 if six else 2])),
                                               strict=False)
    if random.random() < 0.3:
        dst = (IPv6Network if six else IPv4Network)("::/0" if six else "0.0.0.0/0")
    address = _v6 if six else _v4
    oif, gateway = random.randrange(1, 1 << 20), random.choice([None, address()])
    onlink, scope_link = random.choice([True, False]), random.choice([True, False])
    src, mtu = random.choice([None, address()]), random.choice([None, random.randrange(68, 9000)])
    proto = random.choice([rtnl.RTPROT_BOOT, 80])  # Felix's routes are proto 80
    got = _queued(lambda r: r.add_route(dst, oif, gateway=gateway, onlink=onlink, scope_link=scope_link, src=src, mtu=mtu,
                                        proto=proto))
    assert got == _pyroute2(rtnl.route_msg, rtnl.RTM_NEWROUTE, rtnl.CREATE, got, dst=dst.network_address,
                            dst_len=dst.prefixlen, oif=oif, gateway=gateway, onlink=onlink, scope_link=scope_link,
                            src=src, mtu=mtu, proto=proto)


@case
def blackhole() -> None:  # AddBlackhole: a node's IPAM block, Felix's proto 80 (or boot)
    dst = IPv4Network((random.randrange(1 << 32) >> 6 << 6, 26))
    proto = random.choice([rtnl.RTPROT_BOOT, 80])
    got = _queued(lambda r: r.add_blackhole(dst, proto))
    assert got == _pyroute2(rtnl.route_msg, rtnl.RTM_NEWROUTE, rtnl.CREATE, got, dst=dst.network_address,
                            dst_len=dst.prefixlen, oif=0, proto=proto, blackhole=True)


@case
def neighbour() -> None:  # AddNeighbour (ARP/NDP) and AddFdb (a VXLAN device's fdb)
    bridge = random.choice([True, False])
    ip, index, mac = random.choice([_v4(), _v6()]), random.randrange(1, 1 << 20), _mac()
    flags = rtnl.NLM_F_REQUEST | rtnl.NLM_F_ACK | rtnl.NLM_F_CREATE | rtnl.NLM_F_REPLACE
    got = _queued(lambda r: r.replace_neighbour(index, ip, mac, bridge=bridge))
    assert got == _pyroute2(rtnl.neighbour_msg, rtnl.RTM_NEWNEIGH, flags, got, index=index, ip=ip, mac=mac, bridge=bridge)


@pytest.mark.parametrize("name", sorted(CASES))
def test_filled_templates_are_pyroute2s_bytes(name: str) -> None:
    random.seed(name)
    for _ in range(200):
        CASES[name]()


def test_every_message_the_apply_layer_sends_has_a_case() -> None:
    """A new kind of message in rtnl.py needs a case above (the builders are its messages)."""
    builders = {n for n in dir(rtnl) if n.endswith("_msg") and callable(getattr(rtnl, n))}
    assert builders == {"link_msg", "veth_msg", "vxlan_msg", "ifname_msg", "set_link_msg", "address_msg", "route_msg",
                        "neighbour_msg"}


def test_a_field_that_moves_other_bytes_is_refused() -> None:
    """A field whose value changes the message's length cannot be filled in: the encoder says so."""
    def padded(n: int) -> Any:
        return rtnl.ifname_msg("x" * (n % 50))

    with pytest.raises(ValueError, match="changes the message's length"):
        templates.Template(padded, rtnl.RTM_GETLINK, 1, {}, {"n": templates.u8(5)})


def test_the_lookup_of_an_interface_is_pyroute2s_too() -> None:
    for ifname in ("eth0", "cni0", _ifname(), "flannel.1"):
        encoder = templates.Encoder()
        got = encoder.encode(rtnl.ifname_msg, rtnl.RTM_GETLINK, rtnl.NLM_F_REQUEST, 7, ifname=templates.name(ifname))
        assert got == templates.encode(rtnl.ifname_msg, rtnl.RTM_GETLINK, rtnl.NLM_F_REQUEST, 7, ifname=ifname)
    assert socket.AF_INET  # the module's families are the socket module's


def test_two_encodings_find_every_field_of_a_message() -> None:
    """Each field's sentinel bytes are its own, so one encoding with all of them changed places
    them all (a pod's veth: seven fields, two encodings instead of eight)."""
    fields = {"ifname": templates.name(_ifname()), "peer_ifname": templates.name("eth0"), "peer_ns_fd": templates.u32(9),
              "mtu": templates.u32(1500), "peer_mtu": templates.u32(1500), "master": templates.u32(3),
              "mac": templates.mac(_mac())}
    t = templates.Template(rtnl.veth_msg, rtnl.RTM_NEWLINK, rtnl.CREATE, {"up": True}, fields)
    assert t.encodings == 2 and all(len(offsets) == 1 for offsets, _, _ in t.places.values())
    address = templates.Template(rtnl.address_msg, rtnl.RTM_NEWADDR, rtnl.CREATE, {},
                                 {"index": templates.u32(2), "ip": templates.ip(_v4()), "prefixlen": templates.u8(24)})
    assert address.encodings == 2 and len(address.places["ip"][0]) == 2  # IFA_LOCAL and IFA_ADDRESS


def test_the_kernels_numbers_are_pyroute2s() -> None:
    from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST
    from pyroute2.netlink import rtnl as p

    assert (rtnl.NLM_F_REQUEST, rtnl.NLM_F_ACK, rtnl.NLM_F_REPLACE, rtnl.NLM_F_EXCL, rtnl.NLM_F_CREATE) == \
        (NLM_F_REQUEST, NLM_F_ACK, NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE)
    for name in ("RTM_NEWLINK", "RTM_GETLINK", "RTM_NEWADDR", "RTM_NEWROUTE", "RTM_DELROUTE", "RTM_NEWNEIGH",
                 "RTM_NEWQDISC", "RTM_NEWTFILTER", "RTM_DELTFILTER"):
        assert getattr(rtnl, name) == getattr(p, name), name


def _some_messages(encoder: templates.Encoder) -> list[bytes]:
    return [
        encoder.encode(rtnl.veth_msg, rtnl.RTM_NEWLINK, rtnl.CREATE, 3, ifname=templates.name("vethabcdef01"),
                       peer_ifname=templates.name("eth0"), peer_ns_fd=templates.u32(7), mtu=templates.u32(1500),
                       peer_mtu=templates.u32(1500), master=templates.u32(4), up=True, mac=None),
        encoder.encode(rtnl.address_msg, rtnl.RTM_NEWADDR, rtnl.CREATE, 4, index=templates.u32(2),
                       ip=templates.ip(IPv4Address("10.244.0.2")), prefixlen=templates.u8(24)),
        encoder.encode(rtnl.route_msg, rtnl.RTM_NEWROUTE, rtnl.CREATE, 5, dst=IPv4Address("0.0.0.0"), dst_len=0,
                       oif=templates.u32(2), gateway=templates.ip(IPv4Address("10.244.0.1")), onlink=False,
                       scope_link=False, src=None, mtu=None),
    ]


def test_stored_templates_give_the_same_bytes_without_encoding_again(tmp_path: Any) -> None:
    store = tmp_path / "netlink-test.json"
    first = templates.Encoder(store)
    made = _some_messages(first)
    assert first.made == 3
    first.save()
    again = templates.Encoder(store)
    assert _some_messages(again) == made and again.made == 0
    store.write_text("{not json")  # a store that does not read back is made again
    third = templates.Encoder(store)
    assert _some_messages(third) == made and third.made == 3


def test_a_run_whose_messages_are_stored_does_not_load_pyroute2(tmp_path: Any) -> None:
    import subprocess
    import sys

    store = tmp_path / "netlink-test.json"
    first = templates.Encoder(store)
    _some_messages(first)
    first.save()
    code = ("import sys; from pathlib import Path; from cni_lab.kernel import templates; "
            "import tests.unit.test_templates as t; "
            f"e = templates.Encoder(Path({str(store)!r})); t._some_messages(e); "
            "print(e.made, [m for m in sys.modules if m.startswith('pyroute2.')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(__import__("pathlib").Path(__file__).resolve().parents[2])).stdout.strip()
    assert out == "0 []"


def test_the_store_is_named_after_pyroute2_and_the_builders(tmp_path: Any) -> None:
    path = templates.store_for(tmp_path)
    assert path is not None and path.parent == tmp_path and path.name.startswith("netlink-")
    assert templates.store_for(tmp_path) == path  # the same code, the same file
