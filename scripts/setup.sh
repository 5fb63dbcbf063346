#!/usr/bin/env bash
# Sets up cni-lab on a Debian/Ubuntu machine (run as root): the system packages the lab uses,
# a virtualenv in .venv with the project installed, and /usr/local/bin/cni-lab.
# Safe to run again. Used by the README, .ci/run and the Vagrantfile: one source of truth.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh installs system packages: run it as root (sudo ./scripts/setup.sh)" >&2
  exit 2
fi

# iproute2: ip netns exec for `cni-lab exec`; iputils-ping/tcpdump: tools learners run in pods;
# nftables/conntrack: the NAT negative control of the tests; bird2: the BGP daemon of `bgp`;
# containernetworking-plugins: the CNI reference plugins of `cni`; graphviz: `graph -o x.png`;
# chromium: the report's rendering test; mininet + bridge-utils: the benchmark's comparison.
packages=(python3 python3-venv python3-pip iproute2 iputils-ping nftables conntrack tcpdump bird2
          containernetworking-plugins graphviz chromium mininet bridge-utils)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
  # cni-lab runs its own BIRDs inside lab namespaces; the package's host-wide service is not
  # wanted (it would run in the machine's own namespace), so it is stopped if it was started.
  if [[ " ${missing[*]} " == *" bird2 "* ]] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    systemctl disable --now bird.service >/dev/null 2>&1 || true
  fi
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -e '.[test]'
ln -sf "$PWD/.venv/bin/cni-lab" /usr/local/bin/cni-lab
echo "cni-lab is ready: $(.venv/bin/cni-lab --version)"
