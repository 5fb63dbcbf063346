"""Watching the lab's packets: observe."""

from __future__ import annotations

import json
import time
from typing import Iterable

import click
from rich.text import Text

from cni_lab import faults, lifecycle, observing, privileges
from cni_lab.cli.app import _complete_labs, cli, err, out
from cni_lab.errors import LabError
from cni_lab.observe import filters, summary as flow_summary
from cni_lab.observe.decode import Decoder
from cni_lab.observe.flows import Flow, recorded, to_json
from cni_lab.report import flow_view

RELOAD_SECONDS = 2.0  # how often the lab (its policies, Services) and its faults are read again


def _emit(flow: Flow, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(to_json(flow), separators=(",", ":")))
    else:
        out.print(flow_view.flow_line(flow), soft_wrap=True, highlight=False)


def _recorded(lab_name: str) -> Iterable[Flow]:
    """The flows the lab's last `check` recorded (observed while it probed)."""
    document = lifecycle.last_check(lab_name)
    if document is None:
        raise LabError(f"lab {lab_name} has no check on record: run `sudo cni-lab check {lab_name}` first")
    return recorded(document)


@cli.command()
@click.argument("lab", required=False, shell_complete=_complete_labs)
@click.option("--pod", multiple=True, help="Either end is this pod (node/pod, namespace/pod or pod).")
@click.option("--node", multiple=True, help="Observed at this node (or `router`).")
@click.option("--from", "from_", multiple=True, help="The source: a pod, node, address or CIDR.")
@click.option("--to", multiple=True, help="The destination: a pod, node, address or CIDR.")
@click.option("--port", multiple=True, help="Either end's port.")
@click.option("--protocol", multiple=True, help="tcp, udp, sctp, icmp.")
@click.option("--verdict", multiple=True, help="FORWARDED, DROPPED, TRANSLATED, ERROR.")
@click.option("--since", help="Only flows since then: 30s, 5m, 1h or an RFC 3339 time.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per flow, as `hubble observe -o json`.")
@click.option("--summary", "summarize", is_flag=True, help="No lines: the top talkers and drop causes at the end.")
@click.option("--duration", type=float, help="Stop after this many seconds (default: Ctrl-C).")
@click.option("--count", type=int, help="Stop after this many flows.")
@click.option("--last-check", is_flag=True, help="The flows the last `check` observed, instead of live ones.")
def observe(lab: str | None, pod: tuple[str, ...], node: tuple[str, ...], from_: tuple[str, ...], to: tuple[str, ...],
            port: tuple[str, ...], protocol: tuple[str, ...], verdict: tuple[str, ...], since: str | None,
            as_json: bool, summarize: bool, duration: float | None, count: int | None, last_check: bool) -> None:
    """Every flow in the lab as it happens, with the cause of every drop: observe [LAB]

    Each line: time, source → destination, protocol, verdict (FORWARDED, DROPPED, TRANSLATED,
    ERROR), the node that saw it and where, and why: the policy that dropped it, the Service
    endpoint or masquerade that rewrote it, the ICMP error a node sent, the fault on its way.
    Read from the lab's own namespaces: nftables log rules (nflog), conntrack events, the BPF
    ring buffer on ebpf.

    \b
    Example: sudo cni-lab observe --verdict DROPPED
    Example: sudo cni-lab observe netpol --pod x/a --json | jq .flow.drop_reason_desc
    Example: sudo cni-lab observe --summary --duration 30
    """
    privileges.require_root("observe")
    lab_name = lifecycle.pick(lab)
    chosen = filters.build(pod=pod, node=node, from_=from_, to=to, port=port, protocol=protocol, verdict=verdict,
                           since=since, now=time.time())
    if count is not None and count < 1:
        raise LabError("--count: give a number of flows above 0")
    seen: list[Flow] = []
    if last_check:
        for flow in _recorded(lab_name):
            if chosen.matches(flow):
                seen.append(flow)
                if not summarize:
                    _emit(flow, as_json)
                if count is not None and len(seen) >= count:
                    break
    else:
        seen = _live(lab_name, chosen, as_json, summarize, duration, count)
    if summarize:
        result = flow_summary.summarize(seen)
        if as_json:
            click.echo(json.dumps(flow_summary.to_json(result), indent=2))
        else:
            out.print(flow_view.summary_view(result))


def _live(lab_name: str, chosen: filters.Filter, as_json: bool, summarize: bool, duration: float | None,
          count: int | None) -> list[Flow]:
    lab, _ = lifecycle.running_lab(lab_name)
    seen: list[Flow] = []
    with observing.sources(lab) as reader:
        if reader.busy:
            raise LabError(f"another observer holds lab {lab_name}'s flows (nflog group in {', '.join(reader.busy)}): "
                           "a running `observe` or `check`; stop it first")
        kinds = "nflog, conntrack" + (", BPF ring buffers" if reader.rings else "")
        err.print(Text(f"observing lab {lab_name}: {len(observing.namespaces(lab))} namespaces ({kinds}); "
                       + ("Ctrl-C to stop" if duration is None else f"for {duration:g} s"), style="dim"),
                  soft_wrap=True)
        decoder = Decoder(lab, faults.recorded(lab_name))
        start = reloaded = time.monotonic()
        shown = 0
        try:
            while duration is None or time.monotonic() - start < duration:
                for raw in reader.read(0.2):
                    flow = decoder.flow(raw)
                    if flow is None or not chosen.matches(flow):
                        continue
                    shown += 1
                    if summarize:
                        seen.append(flow)
                    else:
                        _emit(flow, as_json)
                    if count is not None and shown >= count:
                        return seen
                if time.monotonic() - reloaded > RELOAD_SECONDS:  # policies applied, faults injected meanwhile
                    reloaded = time.monotonic()
                    if lab_name not in lifecycle.running():
                        err.print(f"lab {lab_name} is down: nothing more to observe")
                        break
                    lab, _ = lifecycle.running_lab(lab_name)
                    decoder = Decoder(lab, faults.recorded(lab_name))
        except KeyboardInterrupt:
            pass
        if reader.lost:
            err.print(Text(f"note: the kernel could not hand over everything: {reader.lost} reads overflowed "
                           "(flows lost)", style="yellow"))
    return seen
