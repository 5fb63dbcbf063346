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
