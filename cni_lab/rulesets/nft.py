"""nftables text the lab loads with `nft -f` (policy, masquerade, Services): pure rendering."""

from __future__ import annotations


def replace(family: str, table: str) -> list[str]:
    """The lines that make `nft -f` replace the table as a whole, in one transaction: created if
    missing, deleted, then written anew by the lines that follow."""
    return [f"table {family} {table} {{}}", f"delete table {family} {table}"]


def chains(named: dict[str, list[str]]) -> list[str]:
    """Regular chains, each with its rules, indented as inside a table."""
    out = []
    for name, rules in named.items():
        out.append(f"  chain {name} {{")
        out += [f"    {rule}" for rule in rules]
        out.append("  }")
    return out


def parse_chains(listing: str) -> dict[str, list[str]]:
    """`nft list table` output → each chain's rules, as printed (the chain's type/hook/policy and
    comment lines left out)."""
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    for raw in listing.splitlines():
        line = raw.strip()
        if line.startswith("chain ") and line.endswith("{"):
            current = out.setdefault(line[len("chain "):-1].strip(), [])
        elif line == "}":
            current = None
        elif current is not None and line and not line.startswith(("type ", "comment ")):
            current.append(line)
    return out


def parse_elements(listing: str, name: str) -> list[str]:
    """The elements of set or map `name` in an `nft list table` output, one string each."""
    start = listing.find(f"map {name} {{")
    if start < 0:
        start = listing.find(f"set {name} {{")
    if start < 0:
        return []
    end = listing.find("\n\t}", start)
    block = listing[start:end if end > 0 else None]
    if "elements = {" not in block:
        return []
    inner = block.split("elements = {", 1)[1]
    inner = inner[:inner.index("}")]
    return [" ".join(e.split()) for e in inner.split(",") if e.strip()]
