"""Label keys and values as Kubernetes validates them (apimachinery's validation.IsQualifiedName
and IsValidLabelValue), for the scenario's labels and selectors and for NetworkPolicy's alike.

- A key is a name of 1-63 of [A-Za-z0-9-_.], alphanumeric at both ends, with an optional prefix
  and a slash; the prefix is a DNS subdomain (lowercase labels joined by dots, 253 at most).
- A value is empty, or 1-63 of the name's characters, alphanumeric at both ends.

Each caller keeps its own words for a refusal; this module only answers yes or no.
"""

from __future__ import annotations

import re
from typing import TypeGuard

MAX_DNS_SUBDOMAIN = 253  # RFC 1123, as Kubernetes' DNS1123SubdomainMaxLength
_DNS_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"  # 63 at most, as a DNS label
DNS_SUBDOMAIN = re.compile(rf"^{_DNS_SUBDOMAIN}\Z")
LABEL_KEY = re.compile(rf"^({_DNS_SUBDOMAIN}/)?{_NAME}\Z")
LABEL_VALUE = re.compile(rf"^({_NAME})?\Z")


def is_dns_subdomain(text: object) -> TypeGuard[str]:
    """An object's name (a NetworkPolicy's), or a label key's prefix."""
    return isinstance(text, str) and len(text) <= MAX_DNS_SUBDOMAIN and DNS_SUBDOMAIN.match(text) is not None


MAX_DNS_LABEL = 63  # RFC 1123, as Kubernetes' DNS1123LabelMaxLength
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")  # used with fullmatch: no trailing newline slips by


def is_dns_label(text: object) -> TypeGuard[str]:
    """A Service port's name (ValidateDNS1123Label): lowercase, digits and '-', alphanumeric at
    both ends, 63 at most. Not IANA_SVC_NAME, which a container port's name must be."""
    return isinstance(text, str) and len(text) <= MAX_DNS_LABEL and DNS_LABEL.fullmatch(text) is not None


def is_label_key(key: object) -> TypeGuard[str]:
    # the pattern bounds the name; the prefix's length needs counting
    return (isinstance(key, str) and LABEL_KEY.match(key) is not None
            and len(key.rpartition("/")[0]) <= MAX_DNS_SUBDOMAIN)


def is_label_value(value: object) -> TypeGuard[str]:
    """Text only: a scenario that lets a YAML number stand for a value turns it into text first."""
    return isinstance(value, str) and LABEL_VALUE.match(value) is not None
