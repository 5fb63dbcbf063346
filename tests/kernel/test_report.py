"""Pictures and the HTML report of running labs, the report rendered in headless Chromium."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path
from typing import Callable

import pytest
from helpers import two_nodes

from cni_lab import plan
from cni_lab.cluster import Lab
from cni_lab.lesson import explain
from cni_lab.report import topology

MakeLab = Callable[..., Lab]
BROWSER = next((b for b in ("chromium", "google-chrome", "google-chrome-stable", "chrome") if shutil.which(b)), None)
CHROMIUM = [BROWSER or "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cni_lab", *args], capture_output=True, text=True, timeout=120)


def png_colours(path: Path) -> int:
    """How many distinct RGB(A) pixels a PNG has (8-bit, non-interlaced, as Chromium writes)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, channels = 8, b"", 0, 4
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width = struct.unpack(">I", chunk[:4])[0]
            channels = {2: 3, 6: 4}[chunk[9]]
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels + 1
    rows = [raw[i + 1:i + stride] for i in range(0, min(len(raw), stride * 200), stride)]
    return len({row[j:j + 3] for row in rows for j in range(0, len(row), channels * 7)})


def test_graph_of_a_running_lab_reads_the_kernel(make_lab: MakeLab, tmp_path: Path) -> None:
    lab = make_lab(two_nodes("host-gw"))
    done = cli("graph", lab.name, "-o", str(tmp_path / "lab.svg"))
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "lab.svg").read_text()
    ET.fromstring(text)
    assert "10.244.1.0/24 via 192.168.1.3" in text and "10.244.0.3" in text
    if shutil.which("dot"):
        assert cli("graph", lab.name, "-o", str(tmp_path / "lab.png")).returncode == 0
        assert (tmp_path / "lab.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.skipif(BROWSER is None, reason="no chromium or google-chrome on the PATH (setup.sh --test installs "
                                           "Debian's chromium; Ubuntu has only a snap)")
def test_report_renders_in_headless_chromium(make_lab: MakeLab, tmp_path: Path) -> None:
    lab = make_lab(two_nodes("bridge"))
    # what `report` draws: the last check, kept by the CLI (a bridge lab fails across nodes: exit 1)
    assert cli("check", lab.name).returncode == 1
    report = tmp_path / "report.html"
    done = cli("report", lab.name, "-o", str(report))
    assert done.returncode == 0, done.stderr
    page = report.read_text()
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")  # self-contained
    shot = tmp_path / "shot.png"
    profile = tmp_path / "profile"
    subprocess.run([*CHROMIUM, f"--user-data-dir={profile}", f"--screenshot={shot}", "--window-size=1200,1600",
                    report.as_uri()], capture_output=True, timeout=120)
    assert shot.exists() and png_colours(shot) > 10  # rendered, not blank
    dom = subprocess.run([*CHROMIUM, f"--user-data-dir={profile}", "--dump-dom", report.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    assert 'id="matrix"' in dom and 'id="rules"' in dom
    assert dom.count("<td ") >= 20  # a cell per pair of the 5-endpoint lab
    assert "unreachable" in dom  # the bridge lab's failing pairs, with their verdicts


@pytest.mark.parametrize("dataplane", ["host-gw", "vxlan", "fabric", "bgp", "cni"])
def test_the_plan_draws_what_the_kernel_has(make_lab: MakeLab, dataplane: str) -> None:
    # `graph SCENARIO` draws from the plan, `graph LAB` from the kernel: the same picture
    doc = two_nodes(dataplane, **({"cni": {"routing": "vxlan"}} if dataplane == "cni" else {}))
    if dataplane == "fabric":
        doc["networking"] = {"underlay": {"segments": {"rack1": "192.168.1.0/24", "rack2": "192.168.2.0/24"}}}
        doc["nodes"] = [{"name": "node1", "segment": "rack1", "pods": 1}, {"name": "node2", "segment": "rack2", "pods": 1}]
    lab = make_lab(doc)
    planned = topology.of_plan(plan.build(lab))
    read = topology.build(lab, topology.kernel_hops(explain.routing(lab, explain.read(lab))))
    assert planned.links and set(planned.links) == set(read.links)
