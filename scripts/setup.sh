#!/usr/bin/env bash
# Sets up cni-lab on a Debian 12 or Ubuntu 22.04/24.04 machine (run as root): the system packages
# the lab uses, a virtualenv in .venv with the project installed, and /usr/local/bin/cni-lab.
#
#   sudo ./scripts/setup.sh          what the lab needs to run (a learner's VM, a runtime image)
#   sudo ./scripts/setup.sh --test   and what the tests and the benchmark use
#
# Safe to run again. Used by the README, .ci/run, the Containerfile and the Vagrantfile: one
# source of truth.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh installs system packages: run it as root (sudo ./scripts/setup.sh)" >&2
  exit 2
fi
test_extras=0
case "${1:-}" in
  "") ;;
  --test) test_extras=1 ;;
  *) echo "usage: setup.sh [--test]" >&2; exit 2 ;;
esac

# iproute2: ip netns exec for `cni-lab exec`; iputils-ping/tcpdump: tools learners run in pods;
# nftables/conntrack: NAT experiments; bird2: the BGP daemon of `bgp`; containernetworking-plugins:
# the CNI reference plugins of `cni` (iptables: what their bridge plugin's ipMasq calls); graphviz: `graph -o x.png`; clang, llvm, libbpf-dev (headers)
# and bpftool: the `ebpf` data plane compiles, loads and pins its tc programs; dnsmasq-base: the
# cluster DNS server behind kube-dns (the program alone: no service unit, it starts nothing by
# itself). The same names on Debian and Ubuntu.
packages=(python3 python3-venv python3-pip iproute2 iputils-ping nftables conntrack tcpdump bird2
          containernetworking-plugins iptables graphviz clang llvm libbpf-dev bpftool dnsmasq-base)
# The tests: a browser renders the HTML report, ruby checks the Vagrantfile's syntax, mininet and
# bridge-utils are the benchmark's comparison, util-linux's setpriv drops a capability, podman,
# runc and debootstrap build and run the container image from a local Debian base; iperf3: the
# benchmark's throughput between pods; bind9-dnsutils: dig, which the DNS tests ask kube-dns with.
test_packages=(ruby mininet bridge-utils util-linux podman runc debootstrap debian-archive-keyring iperf3
               bind9-dnsutils)

available() {  # a package apt can install here (Ubuntu 24.04 has no `chromium`, only a snap stub)
  apt-cache policy "$1" 2>/dev/null | grep "Candidate: [0-9]" >/dev/null  # not -q: with pipefail, an early exit fails the pipe
}
installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

wanted=("${packages[@]}")
if [ "$test_extras" = 1 ]; then
  wanted+=("${test_packages[@]}")
fi
missing=()
for p in "${wanted[@]}"; do
  installed "$p" || missing+=("$p")
done
browser=""
if [ "$test_extras" = 1 ]; then
  browser=$(command -v chromium google-chrome google-chrome-stable chrome 2>/dev/null | head -n1 || true)
fi
if [ "${#missing[@]}" -gt 0 ] || { [ "$test_extras" = 1 ] && [ -z "$browser" ]; }; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  if [ "$test_extras" = 1 ] && [ -z "$browser" ]; then
    if available chromium; then
      missing+=(chromium)
    else
      echo "note: no Chromium package here (Ubuntu ships it as a snap); the report's rendering test" \
           "skips until chromium or google-chrome is on the PATH" >&2
    fi
  fi
  if [[ " ${missing[*]} " == *" bpftool "* ]] && ! available bpftool; then
    # Ubuntu ships bpftool in linux-tools-* for its own kernels, not as a package of its own
    missing=("${missing[@]/bpftool/linux-tools-common}")
    echo "note: no bpftool package here; installing linux-tools-common (the ebpf data plane needs" \
         "a bpftool for the running kernel: linux-tools-\$(uname -r))" >&2
  fi
  apt-get install -y -q --no-install-recommends "${missing[@]}"
  # cni-lab runs its own BIRDs inside lab namespaces; the package's host-wide service is not
  # wanted (it would run in the machine's own namespace), so it is stopped if it was started.
  if [[ " ${missing[*]} " == *" bird2 "* ]] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    systemctl disable --now bird.service >/dev/null 2>&1 || true
  fi
fi

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "" 2>/dev/null; then
  rm -rf .venv  # made by another Python (copied from elsewhere): start again
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if [ "$test_extras" = 1 ]; then
  .venv/bin/python -m pip install -q -e '.[test]'
else
  .venv/bin/python -m pip install -q -e .
fi
# the project's bytecode, as pip compiles an installed package's: every command starts ~50 ms
# sooner, also where PYTHONDONTWRITEBYTECODE keeps Python from writing it on first use
.venv/bin/python -m compileall -q cni_lab >/dev/null
ln -sf "$PWD/.venv/bin/cni-lab" /usr/local/bin/cni-lab
echo "cni-lab is ready: $(.venv/bin/cni-lab --version)"
