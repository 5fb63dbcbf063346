"""Bad input, fuzzed: every document gives a plan or one line per problem (exit 2), never a
traceback, a kernel object or a file."""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cni_lab import catalog, model, plan
from cni_lab.cli import cli
from cni_lab.errors import LabError

odd_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", "..", "../etc", "a/b", "x y", "node1", "Node1", "ünïcode", "a" * 100, "-x", "pod-1",
                     "underlay", "router", "10.244.0.0/24", "host-gw"]),
)
cidr = st.one_of(
    st.sampled_from(["10.244.0.0/16", "10.244.0.0/24", "10.244.0.1/24", "192.168.1.0/24", "0.0.0.0/0", "10.0.0.0/33",
                     "::1/128", "10.244.0.0/31", "300.1.1.1/8", "10.244.0.0/8", "192.168.1.0/30"]),
    st.builds(lambda a, b, c: f"10.{a}.{b}.0/{c}", st.integers(0, 300), st.integers(0, 255), st.integers(0, 40)),
)
scalar = st.one_of(st.none(), st.booleans(), st.integers(-5, 5000), st.floats(allow_nan=True), odd_text, cidr)
pods = st.one_of(st.integers(-3, 2000), st.lists(st.one_of(odd_text, scalar), max_size=6), scalar)
node = st.dictionaries(
    st.sampled_from(["name", "ip", "podCIDR", "pods", "segment", "count", "bogus"]),
    st.one_of(odd_text, cidr, pods, scalar, st.integers(0, 1200)), max_size=6)
document = st.fixed_dictionaries(
    {},
    optional={
        "name": st.one_of(odd_text, scalar),
        "dataplane": st.one_of(st.sampled_from(list(model.DATAPLANES)), odd_text, scalar),
        "networking": st.one_of(scalar, st.dictionaries(
            st.sampled_from(list(model.NETWORKING_KEYS) + ["junk"]),
            st.one_of(cidr, scalar, st.dictionaries(st.sampled_from(["segments"]), st.dictionaries(odd_text, cidr))),
            max_size=5)),
        "nodes": st.one_of(scalar, st.lists(st.one_of(node, scalar), max_size=5)),
        "allowOverlap": scalar,
        "expect": st.one_of(scalar, st.lists(st.dictionaries(st.sampled_from(["from", "to", "rule", "verdict", "x"]),
                                                             st.one_of(odd_text, scalar)), max_size=3)),
        "cni": st.one_of(scalar, st.dictionaries(st.sampled_from(["routing", "cniPath", "conflist"]),
                                                 st.one_of(odd_text, scalar, st.just({"plugins": []})), max_size=3)),
    },
)


def plan_or_error(text: str) -> None:
    try:
        the_plan = plan.build(catalog.resolve(model.load_text(text, "fuzz.yaml")))
    except LabError as e:
        assert e.problems and all(p.startswith("fuzz.yaml") or "fuzz.yaml" in p for p in e.problems), e.problems
        assert all("\n" not in p for p in e.problems)
    else:
        assert the_plan.steps


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document)
def test_generated_documents(doc: dict[str, object]) -> None:
    plan_or_error(yaml.safe_dump(doc, allow_unicode=True))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_raw_bytes(data: bytes) -> None:
    plan_or_error(data.decode("utf-8", errors="replace"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=document)
def test_validate_command_never_shows_a_traceback_or_leaves_files(tmp_path_factory: object, doc: dict[str, object]) -> None:
    folder = Path(tmp_path_factory.mktemp("fuzz"))  # type: ignore[attr-defined]
    scenario = folder / "s.yaml"
    scenario.write_text(yaml.safe_dump(doc, allow_unicode=True))
    netns_before = sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else []
    result = CliRunner().invoke(cli, ["validate", str(scenario)])
    assert result.exit_code in (0, 2), result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert sorted(os.listdir(folder)) == ["s.yaml"]
    assert (sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else []) == netns_before
