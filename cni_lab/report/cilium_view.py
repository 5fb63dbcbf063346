"""A node's eBPF maps as Cilium's CLI prints them, so a learner who has typed these commands on a
real node reads the same lines here:

    cilium bpf lb list           cilium_lb4_services_v2 joined with _backends_v3 (cilium-dbg/cmd/bpf_lb_list.go)
    cilium bpf ct list global    cilium_ct4_global, cilium_ct_any4_global (pkg/maps/ctmap/types.go)
    cilium bpf nat list          cilium_snat_v4_external (pkg/maps/nat/ipv4.go)
    cilium bpf ipcache list      cilium_ipcache_v2 (pkg/maps/ipcache/ipcache.go)
    cilium bpf policy get <id>   cilium_policy_v2_<id> (cilium-dbg/cmd/bpf_policy_get.go)
    cilium identity list         the identities and their labels (cilium-dbg/cmd/identity.go)

and the same entries as JSON objects named after Cilium's fields. Cilium's format strings are
followed; where they differ, on purpose:

- Order. Cilium walks a Go map, so its rows come out in a different order every run; these are
  sorted (frontend and slot; tuple, a NAT connection's OUT entry before its IN entry; prefix) so
  the same maps always print the same lines.
- A CT entry shows the fields the lab's programs keep (expires, Packets, Bytes, Flags, RevNAT,
  BackendID); RxFlagsSeen, LastRxReport, TxFlagsSeen, LastTxReport, SourceSecurityID and NatPort
  are never set by them, and a 0 there would read as something seen.
- A policy map's entries of one kind, direction and identity (Cilium sorts by no more, and its
  sort is not stable) are ordered by protocol, port and prefix.
- `cilium bpf policy get`: BYTES and PACKETS are `-`, as Cilium prints them without policy
  accounting (the lab's programs keep no cilium_policystats); the COOKIE column newer releases
  add is left out (the lab's entries carry no cookie).
- Trailing blanks (Cilium's tabwriter pads every cell, and ends a CT line with a space) are cut.

Pure: the kernel layer's values in, strings and dicts out.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from typing import Any, Mapping, Sequence

from cni_lab.dataplanes.ebpf import SVC_FLAG_EXT_LOCAL_SCOPE, SVC_FLAG_NODEPORT, SVC_FLAG_ROUTABLE
from cni_lab.dataplanes.ebpf_policy import ANY_ID, port_proto
from cni_lab.kernel.bpf import CT_LB_LOOPBACK, CT_NODE_PORT, CtEntry, IpcacheEntry, LbEntry, NatEntry, PolicyRow, Tuple

NO_TUNNEL = "0.0.0.0"  # what Cilium prints as the tunnel endpoint of an entry without one

# Cilium's TablePrinter: tabwriter.NewWriter(os.Stdout, 5, 0, 3, ' ', 0) (cilium-dbg/cmd/helpers.go)
MIN_WIDTH, PADDING = 5, 3
LB_TITLES = ("SERVICE ADDRESS", "BACKEND ADDRESS (REVNAT_ID) (SLOT)")
IPCACHE_TITLES = ("IP PREFIX/ADDRESS", "IDENTITY")


POLICY_TITLES = ("POLICY", "DIRECTION", "LABELS (source:key[=value])", "PORT/PROTO", "PROXY PORT", "AUTH TYPE",
                 "BYTES", "PACKETS", "PREFIX")
POLICY_EMPTY = "Policy stats empty. Perhaps the policy enforcement is disabled?"
IDENTITY_TITLES, IDENTITY_MIN_WIDTH = ("ID", "LABELS"), 2  # identity list's tabwriter: minwidth 2


def _columns(lines: Sequence[Sequence[str]], min_width: int = MIN_WIDTH) -> list[str]:
    """Lines of cells as Go's tabwriter aligns them: each cell ended by a tab as wide as the
    widest of its column, title included, plus the padding (at least `min_width`); a line's last
    cell (what follows its last tab: "" when the format ends its cells with a tab) as it is."""
    widths = [max(min_width, *(len(line[c]) + PADDING for line in lines)) for c in range(len(lines[0]) - 1)]
    return [("".join(cell.ljust(w) for cell, w in zip(line, widths)) + line[-1]).rstrip() for line in lines]


def _table(titles: tuple[str, str], rows: Sequence[tuple[str, str]]) -> list[str]:
    """Two columns: the first as wide as its widest cell plus the padding, the second as it is."""
    return _columns([titles, *rows])


# -- cilium bpf lb list ----------------------------------------------------------------------------

def service_flags(flags: int) -> list[str]:
    """ServiceFlags.String's words (pkg/loadbalancer/loadbalancer.go) for the flags the lab writes: ClusterIP or NodePort, then Local
    (externalTrafficPolicy Local), then non-routable (a ClusterIP: not reachable from outside)."""
    words = ["NodePort" if flags & SVC_FLAG_NODEPORT else "ClusterIP"]
    if flags & SVC_FLAG_EXT_LOCAL_SCOPE:
        words.append("Local")
    if not flags & SVC_FLAG_ROUTABLE:
        words.append("non-routable")
    return words


def frontend(e: LbEntry) -> str:
    """Service4Key.String without the slot: `10.96.0.2:80/TCP`."""
    return f"{e.address}:{e.port}/{e.protocol}"


def backend(e: LbEntry) -> str | None:
    """A slot's backend, `10.244.0.2:8080/TCP` (the frontend's protocol); None when the backends
    map lacks it."""
    return None if e.backend is None else f"{e.backend[0]}:{e.backend[1]}/{e.protocol}"


def _lb_order(e: LbEntry) -> tuple[Any, ...]:
    return (IPv4Address(e.address), e.port, e.protocol, e.slot)


def lb_list(entries: Sequence[LbEntry]) -> list[str]:
    """`cilium bpf lb list`: a row per slot, slot 0 with the frontend's reverse NAT index and
    flags, each other slot with its backend (or that the backends map has none by its ID)."""
    rows = []
    for e in sorted(entries, key=_lb_order):
        if e.slot == 0:
            value = f"0.0.0.0:0 ({e.rev_nat_index}) (0) [{', '.join(service_flags(e.flags))}]"
        else:
            found = backend(e)
            value = f"backend {e.backend_id} not found" if found is None else f"{found} ({e.rev_nat_index}) ({e.slot})"
        rows.append((f"{frontend(e)} ({e.slot})", value))
    return _table(LB_TITLES, rows)


def lb_json(entries: Sequence[LbEntry]) -> list[dict[str, Any]]:
    """The same rows as objects: slot 0 holds the backend count, the others a backend ID and the
    backend (null when the backends map lacks it)."""
    return [{"frontend": frontend(e), "slot": e.slot,
             **({"count": e.count} if e.slot == 0 else {"backendId": e.backend_id, "backend": backend(e)}),
             "revNatId": e.rev_nat_index, "flags": service_flags(e.flags)}
            for e in sorted(entries, key=_lb_order)]


# -- cilium bpf ct list global ---------------------------------------------------------------------

def _tuple(t: Tuple) -> str:
    """CtKey4Global.Dump: `TCP OUT 10.244.0.3:41234 -> 10.244.1.2:8080` (`SVC`: client -> frontend)."""
    return f"{t.protocol} {t.direction} {t.src} -> {t.dst}"


def _endpoint(text: str) -> tuple[IPv4Address, int]:
    address, _, port = text.rpartition(":")
    return IPv4Address(address), int(port)


def _tuple_order(t: Tuple) -> tuple[Any, ...]:
    return (t.protocol, _endpoint(t.src), _endpoint(t.dst), t.direction)


def _ct_bits(e: CtEntry) -> list[tuple[str, int]]:
    """The entry's flags the lab keeps, named as CtEntry.flagsString names them, in its order
    (pkg/maps/ctmap/types.go)."""
    return [(name, bit) for name, bit, on in (("LBLoopback", CT_LB_LOOPBACK, e.lb_loopback),
                                              ("NodePort", CT_NODE_PORT, e.node_port)) if on]


def ct_flags(e: CtEntry) -> list[str]:
    return [name for name, _ in _ct_bits(e)]


def ct_list(entries: Sequence[CtEntry]) -> list[str]:
    """`cilium bpf ct list global`: a line per entry, `expires=` the monotonic clock's second it
    lapses at (as Cilium prints it without -d), Flags as `%#04x [ names ]`."""
    lines = []
    for e in sorted(entries, key=lambda e: _tuple_order(e.tuple)):
        bits = sum(bit for _, bit in _ct_bits(e))
        names = "".join(f"{n} " for n in ct_flags(e))
        lines.append(f"{_tuple(e.tuple)} expires={e.expires} Packets={e.packets} Bytes={e.bytes} "
                     f"Flags={bits:#06x} [ {names}] RevNAT={e.rev_nat_index} BackendID={e.backend_id}")
    return lines


def ct_json(entries: Sequence[CtEntry]) -> list[dict[str, Any]]:
    return [{"protocol": e.tuple.protocol, "direction": e.tuple.direction, "source": e.tuple.src,
             "destination": e.tuple.dst, "expires": e.expires, "packets": e.packets, "bytes": e.bytes,
             "flags": ct_flags(e), "revNat": e.rev_nat_index, "backendId": e.backend_id}
            for e in sorted(entries, key=lambda e: _tuple_order(e.tuple))]


# -- cilium bpf nat list ---------------------------------------------------------------------------

def _xlate(e: NatEntry) -> str:
    """OUT entries rewrite the source (to the node), IN entries the reply's destination (back)."""
    return "DST" if e.tuple.direction == "IN" else "SRC"


def _created(e: NatEntry, now: int | None) -> str:
    """`12sec ago`, or Cilium's `? (raw N)` without a clock to count from."""
    return f"? (raw {e.created})" if now is None else f"{max(0, now - e.created)}sec ago"


def _nat_order(e: NatEntry) -> tuple[Any, ...]:
    """A connection's OUT entry, then its IN entry: an IN entry's `to` is the OUT entry's source."""
    t = e.tuple
    if t.direction == "IN":
        return (t.protocol, _endpoint(e.to), _endpoint(t.src), 1)
    return (t.protocol, _endpoint(t.src), _endpoint(t.dst), 0)


def nat_list(entries: Sequence[NatEntry], now: int | None) -> list[str]:
    """`cilium bpf nat list`; `now` is the monotonic clock's second when the map was read (the
    programs stamp entries with bpf_ktime_get_ns). NeedsCT is 0: the lab masquerades pods'
    connections only, never the node's own (the one case Cilium sets it)."""
    return [f"{_tuple(e.tuple)} XLATE_{_xlate(e)} {e.to} Created={_created(e, now)} NeedsCT=0"
            for e in sorted(entries, key=_nat_order)]


def nat_json(entries: Sequence[NatEntry], now: int | None) -> list[dict[str, Any]]:
    return [{"protocol": e.tuple.protocol, "direction": e.tuple.direction, "source": e.tuple.src,
             "destination": e.tuple.dst, "xlate": _xlate(e), "to": e.to, "created": e.created,
             "createdSecAgo": None if now is None else max(0, now - e.created), "needsCt": 0}
            for e in sorted(entries, key=_nat_order)]


# -- cilium bpf ipcache list -----------------------------------------------------------------------

def _prefix_order(e: IpcacheEntry) -> tuple[IPv4Address, int]:
    prefix = IPv4Network(e.prefix)
    return prefix.network_address, prefix.prefixlen


def ipcache_flags(e: IpcacheEntry) -> list[str]:
    """The flag names Cilium prints (skiptunnel, hastunnel, ipv6tunnel, remotecluster): the lab
    sets hastunnel alone, on entries behind a tunnel endpoint."""
    return [] if e.tunnel_endpoint == NO_TUNNEL else ["hastunnel"]


def ipcache_list(entries: Sequence[IpcacheEntry]) -> list[str]:
    """`cilium bpf ipcache list`: prefix → identity, encryption key (0: no encryption), tunnel
    endpoint, flags (`<none>` without any)."""
    rows = [(e.prefix, f"identity={e.identity} encryptkey=0 tunnelendpoint={e.tunnel_endpoint} "
                       f"flags={','.join(ipcache_flags(e)) or '<none>'}") for e in sorted(entries, key=_prefix_order)]
    return _table(IPCACHE_TITLES, rows)


def ipcache_json(entries: Sequence[IpcacheEntry]) -> list[dict[str, Any]]:
    return [{"prefix": e.prefix, "identity": e.identity, "encryptKey": 0, "tunnelEndpoint": e.tunnel_endpoint,
             "flags": ipcache_flags(e)}
            for e in sorted(entries, key=_prefix_order)]


# -- cilium bpf policy get, cilium identity list ---------------------------------------------------

def _labels_of(identity: int, labels: Mapping[int, Sequence[str]]) -> list[str]:
    """An identity's labels, one a line, sorted (Labels.GetPrintableModel), reserved:unknown (0)
    as ANY; the number where its labels are not known (as Cilium prints an identity it cannot get)."""
    found = sorted(labels.get(identity) or (("reserved:unknown",) if identity == ANY_ID else ()))
    return ["ANY" if label == "reserved:unknown" else label for label in found] or [str(identity)]


def _policy_order(r: PolicyRow) -> tuple[Any, ...]:
    """PolicyEntriesDump.Less: Deny before Allow, Ingress before Egress, then by identity."""
    return (not r.deny, r.egress, r.identity, r.protocol, r.port, r.prefix)


def _policy_cells(r: PolicyRow) -> tuple[str, str, str, str]:
    return ("Deny" if r.deny else "Allow", "Egress" if r.egress else "Ingress",
            port_proto(r.protocol, r.port, r.prefix), str(r.prefix))


def policy_get(rows: Sequence[PolicyRow], labels: Mapping[int, Sequence[str]]) -> list[str]:
    """`cilium bpf policy get <endpoint id>`: an entry a line with its identity's first label, its
    other labels on lines of their own; no proxy, no auth, no stats."""
    lines: list[tuple[str, ...]] = [(*POLICY_TITLES, "")]  # every cell ends with a tab
    for r in sorted(rows, key=_policy_order):
        kind, direction, port, prefix = _policy_cells(r)
        first, *more = _labels_of(r.identity, labels)
        lines.append((kind, direction, first, port, "NONE", "disabled", "-", "-", prefix, ""))
        lines += [("", "", label, "", "", "", "", "", "", "") for label in more]
    return _columns(lines) + ([] if rows else [POLICY_EMPTY])


def policy_json(rows: Sequence[PolicyRow], labels: Mapping[int, Sequence[str]]) -> list[dict[str, Any]]:
    return [{"policy": kind, "direction": direction, "identity": r.identity, "labels": _labels_of(r.identity, labels),
             "portProto": port, "prefix": r.prefix}
            for r in sorted(rows, key=_policy_order) for kind, direction, port, _ in [_policy_cells(r)]]


def identity_list(labels: Mapping[int, Sequence[str]]) -> list[str]:
    """`cilium identity list`: every identity (0, which nobody has, left out) with its first label,
    its other labels on lines of their own."""
    rows: list[tuple[str, str]] = [IDENTITY_TITLES]
    for identity in sorted(i for i in labels if i != ANY_ID):
        rows += [(str(identity) if n == 0 else "", label) for n, label in enumerate(_labels_of(identity, labels))]
    return _columns(rows, IDENTITY_MIN_WIDTH)


def identity_json(labels: Mapping[int, Sequence[str]]) -> list[dict[str, Any]]:
    return [{"id": i, "labels": _labels_of(i, labels)} for i in sorted(labels) if i != ANY_ID]
