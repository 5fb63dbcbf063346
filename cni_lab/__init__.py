"""cni-lab: a real miniature Kubernetes pod network in Linux network namespaces."""

__version__ = "0.1.0"
