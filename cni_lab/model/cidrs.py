"""CIDRs in Kubernetes' legacy API fields (a NetworkPolicy's ipBlock.cidr and except), read as
Kubernetes 1.36 reads them: leniently, with the API server's warnings.

- ValidateIPBlock (kubernetes pkg/apis/networking/validation/validation.go) validates with
  IsValidCIDRForLegacyField and parses with netutils.ParseCIDRSloppy; strict validation (no bits
  past the prefix, no leading zeros) only with the StrictIPCIDRValidation feature gate, alpha and
  off by default since 1.33 (pkg/features/kube_features.go). So `10.244.0.5/16` is accepted.
- What it means is the masked network: ParseCIDRSloppy returns it (`IPNet{IP: ip.Mask(m)}`), and
  the CNIs read the stored string the same way (Calico: cnet.ParseCIDR, then ipNet.String(), in
  libcalico-go/lib/backend/k8s/conversion/conversion.go, k8sPeerToCalicoFields).
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network


def parse_cidr_sloppy(value: object) -> tuple[IPv4Address | IPv6Address, IPv4Network | IPv6Network] | None:
    """The address as written and the masked network, or None where ParseCIDRSloppy fails
    (k8s.io/utils internal/third_party/forked/golang/net/ip.go, ParseCIDR): an address, "/", a
    decimal length. IPv4 octets may carry leading zeros, read as decimal (the fork keeps Go
    1.16's parseIPv4, issue 100895); there is no IPv6 zone."""
    if not isinstance(value, str) or "%" in value:
        return None
    address, slash, length = value.partition("/")
    if not slash or not (length.isascii() and length.isdigit()):
        return None
    octets = address.split(".")
    if ":" not in address and len(octets) == 4 and all(o.isascii() and o.isdigit() for o in octets):
        address = ".".join(str(int(o)) for o in octets)
    try:
        ip = ip_address(address)
        return ip, ip_network(f"{ip}/{int(length)}", strict=False)
    except ValueError:
        return None


def cidr_warnings(value: str, ip: IPv4Address | IPv6Address, net: IPv4Network | IPv6Network) -> list[str]:
    """apimachinery's GetWarningsForCIDR (pkg/util/validation/ip.go, v0.36.0 L211-L251), word for
    word: bits past the prefix are ambiguous; leading zeros are non-standard; otherwise an IPv6
    value not in RFC 5952 form. (IPv4-mapped IPv6 values, its other non-standard case, are read
    as IPv6 here.)"""
    out = []
    if ip != net.network_address:
        out.append(f'CIDR value "{value}" is ambiguous in this context (should be "{net}" or "{ip}/{net.max_prefixlen}"?)')
    address, _, length = value.partition("/")
    leading_zero = [part for part in (length, *([] if ":" in address else address.split("."))) if len(part) > 1 and part[0] == "0"]
    if leading_zero:  # what netip.ParsePrefix refuses and ParseCIDRSloppy reads
        out.append(f'non-standard CIDR value "{value}" is invalid: use "{net}"')
    if not out and net.version == 6 and value != f"{ip}/{net.prefixlen}":
        out.append(f'IPv6 CIDR value "{value}" should be in RFC 5952 canonical format ("{ip}/{net.prefixlen}")')
    return out
