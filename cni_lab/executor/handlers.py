"""What each kind of step does to the kernel: one handler per step type, in one table.

A handler turns a step's fields into calls of kernel/'s typed functions and nothing more: the
kernel layer knows no step, and a new kind of step is one handler and one line of the table.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from cni_lab.errors import LabError
from cni_lab.kernel import cni_runtime, daemons, netns, rtnl
from cni_lab.kernel.session import Session, exists_ok
from cni_lab.steps import (
    AddAddress,
    AddBlackhole,
    AddIpip,
    AddBridge,
    AddFdb,
    AddFlowVxlan,
    AddNeighbour,
    AddRoute,
    AddVeth,
    AddVxlan,
    AttachBpf,
    BpfEndpoint,
    BpfNodeConfig,
    BpfIpcache,
    BpfIpcacheSync,
    BpfPolicy,
    BpfServices,
    CniAdd,
    CreateNetns,
    LinkUp,
    LoadBpf,
    LoadNftables,
    SetHairpin,
    SetSysctl,
    StartBird,
    StartDnsmasq,
    Step,
    WaitBgp,
    WriteFile,
    WriteResolvConf,
)

Handler = Callable[[Session, Any], None]  # called with the step type its table entry names


def _create_netns(session: Session, step: CreateNetns) -> None:
    netns.create(step.netns)


def _set_sysctl(session: Session, step: SetSysctl) -> None:
    netns.write_sysctl(step.netns, step.key, step.value)


def _add_bridge(session: Session, step: AddBridge) -> None:
    session.add_link(step.netns, step.ifname, "bridge", lambda r: r.add_link(step.ifname, "bridge", mtu=step.mtu))


def _add_veth(session: Session, step: AddVeth) -> None:
    master = session.index(step.netns, step.master) if step.master else None
    session.add_veth(step.netns, step.ifname, step.peer_netns, step.peer_ifname, mtu=step.mtu, master=master,
                     up=step.up, mac=step.mac)


def _link_up(session: Session, step: LinkUp) -> None:
    master = session.index(step.netns, step.master) if step.master else None
    session.rtnl(step.netns).set_link(session.index(step.netns, step.ifname), up=True, master=master,
                                      noarp=not step.arp)


def _add_address(session: Session, step: AddAddress) -> None:
    index = session.index(step.netns, step.ifname)
    exists_ok(lambda: session.rtnl(step.netns).add_address(index, step.address.ip, step.address.network.prefixlen))


def _add_route(session: Session, step: AddRoute) -> None:
    oif = session.index(step.netns, step.dev)
    proto = rtnl.RTPROT_BOOT if step.proto is None else step.proto
    exists_ok(lambda: session.rtnl(step.netns).add_route(step.dst, oif, gateway=step.via, onlink=step.onlink,
                                                         scope_link=step.scope_link, src=step.src, mtu=step.mtu,
                                                         proto=proto))


def _add_blackhole(session: Session, step: AddBlackhole) -> None:
    proto = rtnl.RTPROT_BOOT if step.proto is None else step.proto
    exists_ok(lambda: session.rtnl(step.netns).add_blackhole(step.dst, proto))


def _add_ipip(session: Session, step: AddIpip) -> None:
    # the ipip module gives every namespace a tunl0 of its own: an existing one of kind ipip is accepted
    session.add_link(step.netns, step.ifname, "ipip", lambda r: r.add_link(step.ifname, "ipip", mtu=step.mtu))


def _add_vxlan(session: Session, step: AddVxlan) -> None:
    link = session.index(step.netns, step.dev)
    session.add_link(step.netns, step.ifname, "vxlan", lambda r: r.add_vxlan(
        step.ifname, mtu=step.mtu, vni=step.vni, local=step.local, port=step.port, learning=step.learning,
        link=link, address=step.mac))


def _add_flow_vxlan(session: Session, step: AddFlowVxlan) -> None:
    session.add_link(step.netns, step.ifname, "vxlan", lambda r: r.add_flow_vxlan(step.ifname, mtu=step.mtu,
                                                                                   port=step.port))


def _add_neighbour(session: Session, step: AddNeighbour) -> None:
    session.rtnl(step.netns).replace_neighbour(session.index(step.netns, step.ifname), step.ip, step.mac)


def _add_fdb(session: Session, step: AddFdb) -> None:
    session.rtnl(step.netns).replace_neighbour(session.index(step.netns, step.ifname), step.dst, step.mac,
                                               bridge=True)


def _set_hairpin(session: Session, step: SetHairpin) -> None:
    session.set_hairpin(step.netns, step.ifname)


def _write_file(session: Session, step: WriteFile) -> None:
    target = session.folder(step.path)
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    target.write_text(step.content)


def _start_bird(session: Session, step: StartBird) -> None:
    daemons.start_bird(step.netns, session.folder(step.folder))


def _start_dnsmasq(session: Session, step: StartDnsmasq) -> None:
    from cni_lab.kernel import dns  # labs with cluster DNS alone

    dns.start_dnsmasq(step.netns, session.folder(step.conf), session.folder(step.pidfile), session.folder(step.log))


def _write_resolv_conf(session: Session, step: WriteResolvConf) -> None:
    from cni_lab.kernel import dns

    dns.write_resolv_conf(step.netns, step.content)


def _wait_bgp(session: Session, step: WaitBgp) -> None:
    daemons.wait_bgp(step.netns, step.node, session.folder(step.folder), step.peers, step.learned)


def _cni_add(session: Session, step: CniAdd) -> None:
    assert session.files is not None
    conflist = json.loads(session.folder(step.conflist).read_text())
    pod = step.pod_netns.split(".", 1)[1].replace(".", "/")
    result = cni_runtime.add(step.netns, step.pod_netns, step.container_id, step.ifname, step.cni_path, conflist,
                             session.files, pod)
    cni_runtime.record(session.folder(step.result), step.netns, step.pod_netns, step.container_id, step.ifname,
                       step.cni_path, step.conflist, result)
    got = [ip.get("address", "").split("/")[0] for ip in result.get("ips", [])]
    if step.expect_ip6 is not None and str(step.expect_ip6) not in got:
        raise LabError(f"CNI ADD for pod {pod}: the plugins gave {', '.join(got) or 'no address'}, but the lab "
                       f"expects {step.expect_ip6} too (a dual-stack lab: host-local needs a range per family)")
    if step.expect_ip is not None and str(step.expect_ip) not in got:
        raise LabError(
            f"CNI ADD for pod {pod}: the plugins gave {', '.join(got) or 'no address'}, but the lab expects "
            f"{step.expect_ip} (cni-lab follows host-local's order over the pod CIDR: first pod .2; "
            "options such as rangeStart are not supported)"
        )


# kernel/bpf.py (and the ebpf data plane's list of programs) are imported by ebpf labs alone


def _load_bpf(session: Session, step: LoadBpf) -> None:
    from cni_lab.dataplanes import ebpf  # the program names a node's object holds
    from cni_lab.kernel import bpf

    if bpf.load(step.source, step.pin, ebpf.PROGRAMS):
        session.pinned.append(step.pin)


def _attach_bpf(session: Session, step: AttachBpf) -> None:
    from cni_lab.kernel import bpf

    bpf.attach(session.rtnl(step.netns), session.index(step.netns, step.ifname), step.direction, step.pin,
               step.program)


def _bpf_node_config(session: Session, step: BpfNodeConfig) -> None:
    from cni_lab.kernel import bpf

    vxlan = session.index(step.netns, step.vxlan) if step.vxlan else 0
    bpf.write_node_config(step.pin, session.index(step.netns, step.uplink), vxlan, step.router_ip, step.vni,
                          step.vxlan is not None, step.node_ip, step.masquerade, step.native_cidr, step.router_ip6)


def _bpf_endpoint(session: Session, step: BpfEndpoint) -> None:
    from cni_lab.kernel import bpf

    pod_mac = session.rtnl(step.pod_netns).link_mac(step.pod_ifname)
    lxc_mac = session.rtnl(step.netns).link_mac(step.lxc)
    bpf.write_endpoint(step.pin, step.ip, session.index(step.netns, step.lxc), pod_mac, lxc_mac, step.lxc_id,
                       step.identity)


def _bpf_policy(session: Session, step: BpfPolicy) -> None:
    from cni_lab.kernel import bpf

    bpf.sync_policy(step.pin, step.lxc_id, step.entries)


def _bpf_ipcache(session: Session, step: BpfIpcache) -> None:
    from cni_lab.kernel import bpf

    bpf.write_ipcache(step.pin, step.prefix, step.identity, step.tunnel_endpoint)


def _bpf_ipcache_sync(session: Session, step: BpfIpcacheSync) -> None:
    from cni_lab.kernel import bpf

    bpf.sync_ipcache(step.pin, step.entries)


def _bpf_services(session: Session, step: BpfServices) -> None:
    from cni_lab.kernel import bpf

    bpf.sync_services(step.pin,
                      tuple(bpf.Frontend(f.address, f.port, f.protocol, f.rev_nat_index, f.flags, f.backend_ids)
                            for f in step.frontends),
                      tuple(bpf.Backend(b.id, b.address, b.port, b.protocol) for b in step.backends))


def _load_nftables(session: Session, step: LoadNftables) -> None:
    from cni_lab.kernel import edit  # policy labs alone

    edit.nft_apply(step.netns, step.ruleset)


HANDLERS: dict[type[Step], Handler] = {
    CreateNetns: _create_netns,
    SetSysctl: _set_sysctl,
    AddBridge: _add_bridge,
    AddVeth: _add_veth,
    LinkUp: _link_up,
    AddAddress: _add_address,
    AddRoute: _add_route,
    AddBlackhole: _add_blackhole,
    AddIpip: _add_ipip,
    AddVxlan: _add_vxlan,
    AddFlowVxlan: _add_flow_vxlan,
    AddNeighbour: _add_neighbour,
    AddFdb: _add_fdb,
    SetHairpin: _set_hairpin,
    WriteFile: _write_file,
    StartBird: _start_bird,
    WaitBgp: _wait_bgp,
    StartDnsmasq: _start_dnsmasq,
    WriteResolvConf: _write_resolv_conf,
    CniAdd: _cni_add,
    LoadBpf: _load_bpf,
    AttachBpf: _attach_bpf,
    BpfNodeConfig: _bpf_node_config,
    BpfEndpoint: _bpf_endpoint,
    BpfIpcache: _bpf_ipcache,
    BpfIpcacheSync: _bpf_ipcache_sync,
    BpfServices: _bpf_services,
    BpfPolicy: _bpf_policy,
    LoadNftables: _load_nftables,
}


def apply_step(session: Session, step: Step) -> None:
    """Make one step real (in a batch: encode its request into its namespace's queue)."""
    handler = HANDLERS.get(type(step))
    if handler is None:  # pragma: no cover - a new step type without a handler is a bug
        raise TypeError(f"no kernel handler for {step!r}")
    handler(session, step)
