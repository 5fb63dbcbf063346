"""The data planes by name: the module and class of each, the default, and the choices of the two
that take options of their own. A scenario names its data plane with one of these words; the
code outside dataplanes/ never compares them, it asks the data plane's capabilities.

Adding a data plane is one module in this package (a class with the methods of `DataPlane`,
`capabilities` among them) and one line in PLANES.

This module is data and imports nothing of cni_lab, so the model (the floor below everything)
takes its list of valid names from here. A data plane's module sits above the resolved lab it
wires (it imports cluster.py), so this table names it by string ("module:class", as setuptools'
entry points name plugins) and `dataplanes.get`, above the lab, imports it when first asked.
"""

from __future__ import annotations

PLANES = {  # name → "module:class", in the order the model lists them
    "bridge": "cni_lab.dataplanes.bridge:Bridge",
    "host-gw": "cni_lab.dataplanes.hostgw:HostGw",
    "vxlan": "cni_lab.dataplanes.vxlan:Vxlan",
    "fabric": "cni_lab.dataplanes.fabric:Fabric",
    "bgp": "cni_lab.dataplanes.bgp:Bgp",
    "cni": "cni_lab.dataplanes.cni:Cni",
    "ebpf": "cni_lab.dataplanes.ebpf:Ebpf",
}
NAMES = tuple(PLANES)
DEFAULT = "host-gw"  # flannel's host-gw: the lesson's first working network

# `cni:` and `ebpf:` are scenario sections named after the data plane they configure; `calico:`
# configures `bgp` (Calico's IP pool and calico_backend, by Calico's names).
SECTIONS = ("cni", "ebpf", "calico")
SECTION_PLANE = {"cni": "cni", "ebpf": "ebpf", "calico": "bgp"}  # which data plane reads each section
CNI_ROUTING = ("host-gw", "vxlan", "none")  # cni.routing: how nodes reach each other's pods
CNI_DEFAULT_ROUTING = "host-gw"
EBPF_ROUTING = ("tunnel", "native")  # ebpf.routing: Cilium's routingMode
EBPF_DEFAULT_ROUTING = "tunnel"  # Cilium's default
CALICO_MODES = ("Never", "Always", "CrossSubnet")  # an IPPool's ipipMode and vxlanMode
CALICO_DEFAULT_MODE = "Never"
CALICO_BACKENDS = ("bird", "vxlan")  # calico_backend: BGP with BIRD, or VXLAN without BGP
CALICO_DEFAULT_BACKEND = "bird"
