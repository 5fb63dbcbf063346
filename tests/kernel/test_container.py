"""The runtime image, built for real with podman from a local Debian 12 base (debootstrap from the
configured mirror: no image registry), runs the demo and a JUnit run in a privileged container, and
the suite's container-sensitive tests pass inside it, in the container's own network namespace."""

from __future__ import annotations

import re
import resource
import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]
BASE = "localhost/cnilab-debian:12"
IMAGE = "localhost/cnilab-runtime:test"
TESTING = "localhost/cnilab-testing:test"
ROOTFS = Path("/var/tmp/cnilab-debian-rootfs")
# the tests whose outcome depends on running in a container's own network namespace
# (and the ebpf data plane's: bpffs, clang's cache and the bpf syscall, as a container has them)
SENSITIVE = ["tests/kernel/test_scale.py", "tests/kernel/test_check.py", "tests/kernel/test_ebpf.py",
             "tests/kernel/test_packaging.py::test_doctor_json_on_this_machine"]

pytestmark = [
    pytest.mark.skipif(not (shutil.which("podman") and shutil.which("debootstrap")),
                       reason="podman and debootstrap are not installed (setup.sh --test installs them)"),
    # podman marks its containers with this file (/.dockerenv alone is no proof: this project's own
    # CI machines are VMs that carry it); podman inside podman hung here
    pytest.mark.skipif(Path("/run/.containerenv").exists(),
                       reason="inside a podman container: these tests build and run the image from the host"),
]


def podman(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)


def mirror() -> str:
    """The Debian mirror apt uses here (debootstrap takes the base from it)."""
    for source in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        text = source.read_text() if source.is_file() else ""
        found = re.search(r"^URIs:\s*(\S+/debian)\s*$", text, re.M) or re.search(r"^deb\s+(\S+/debian)\s+\w+", text, re.M)
        if found:
            return found.group(1)
    return "http://deb.debian.org/debian"


RUNTIME = ["--runtime", "runc"] if shutil.which("runc") else []


def run_options() -> list[str]:
    """podman's run options this machine needs. Its default rlimits can exceed what this process
    may set (without CAP_SYS_RESOURCE runc gets EPERM): find ones it accepts, from the hard limits
    down, rather than hard-coding them."""
    def works(limits: list[str]) -> bool:
        return podman("run", "--rm", *RUNTIME, *limits, BASE, "true", timeout=60).returncode == 0

    if works([]):
        return RUNTIME
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    while nproc >= 1024:
        limits = ["--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", f"nproc={nproc}:{nproc}"]
        if works(limits):
            return RUNTIME + limits
        nproc //= 2
    pytest.fail("podman runs no container here, whatever the rlimits: "
                + podman("run", "--rm", *RUNTIME, BASE, "true").stderr.strip()[-300:])


def host_ca() -> list[str]:
    """Behind a TLS-inspecting proxy pip needs the machine's CA bundle: lend it to the build."""
    bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    return ["-v", f"{bundle}:/run/host-ca.crt:ro", "--build-arg", "PIP_CERT=/run/host-ca.crt"] if bundle.exists() else []


@pytest.fixture(scope="module")
def image() -> Iterator[list[str]]:
    """Build the base and the runtime image; remove both (and the base's files) afterwards."""
    if podman("info", timeout=60).returncode != 0:
        pytest.fail("podman is installed but cannot run here: " + podman("info").stderr.strip()[-300:])
    try:
        shutil.rmtree(ROOTFS, ignore_errors=True)
        done = subprocess.run(["debootstrap", "--variant=minbase", "bookworm", str(ROOTFS), mirror()],
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-1500:] + done.stderr[-1500:]
        tar = subprocess.Popen(["tar", "-C", str(ROOTFS), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(["podman", "import", "-", BASE], stdin=tar.stdout, capture_output=True, text=True)
        tar.wait()
        assert imported.returncode == 0, imported.stderr
        options = run_options()
        built = podman("build", *RUNTIME, "--network", "host", *host_ca(), "--build-arg", f"BASE={BASE}",
                       "-t", IMAGE, "-f", str(ROOT / "Containerfile"), str(ROOT), timeout=900)
        assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-2000:]
        yield options
    finally:
        podman("rmi", "-f", TESTING, IMAGE, BASE)
        shutil.rmtree(ROOTFS, ignore_errors=True)


def test_the_runtime_image_is_small_and_runs_the_demo(image: list[str]) -> None:
    size = int(podman("image", "inspect", IMAGE, "--format", "{{.Size}}").stdout.strip())
    # clang and LLVM (the ebpf data plane compiles its programs) are ~350 MB of it
    assert size < 900 * 2**20, f"{size / 2**20:.0f} MB: no browser or test packages belong in it"
    assert podman("run", "--rm", *image, IMAGE, "--version").stdout.startswith("cni-lab, version")
    demo = podman("run", "--rm", "--privileged", *image, IMAGE, "demo")
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr
    assert demo.stdout.count("PASS") >= 3


@pytest.mark.parametrize("scenario", ["two-nodes", "ebpf"])
def test_a_junit_run_in_a_privileged_container(image: list[str], scenario: str) -> None:
    with tempfile.TemporaryDirectory(prefix="cnilab-") as work:
        done = podman("run", "--rm", "--privileged", *image, "-v", f"{work}:/work", IMAGE,
                      "run", scenario, "--junit", "/work/junit.xml")
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr
        suite = ET.parse(Path(work) / "junit.xml").getroot().find("testsuite")
        assert suite is not None and suite.get("failures") == "0" and int(suite.get("tests", "0")) >= 5


def test_without_privileges_the_container_is_told_the_flags(image: list[str]) -> None:
    done = podman("run", "--rm", *image, IMAGE, "up", "two-nodes")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "podman run --privileged" in done.stderr and "Traceback" not in done.stderr


def test_the_container_sensitive_tests_pass_inside_it(image: list[str]) -> None:
    # the test runner on top of the runtime image (no browser: the report's test is not among these;
    # the other test packages, network-config-analyzer's solver among them, none of these tests imports)
    with tempfile.TemporaryDirectory(prefix="cnilab-") as context:
        (Path(context) / "Containerfile").write_text(
            f"FROM {IMAGE}\nARG PIP_CERT=\nWORKDIR /opt/cni-lab\n"
            "RUN .venv/bin/python -m pip install -q 'pytest>=8' 'jsonschema>=4'\n")  # what SENSITIVE imports
        built = podman("build", *RUNTIME, "--network", "host", *host_ca(), "-t", TESTING, context, timeout=900)
        assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    done = podman("run", "--rm", "--privileged", *image, "--entrypoint", ".venv/bin/pytest", "-w", "/opt/cni-lab",
                  TESTING, "-q", "-p", "no:cacheprovider", *SENSITIVE,
                  "-k", "not benchmark_quick_mode",  # the bench measures this machine, not the container's view
                  timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-1000:]
    assert " passed" in done.stdout and " failed" not in done.stdout
