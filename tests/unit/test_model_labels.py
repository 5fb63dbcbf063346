"""One label rule for scenarios and NetworkPolicies: Kubernetes' own, held to the examples of
apimachinery's pkg/util/validation/validation_test.go (TestIsQualifiedName, TestIsValidLabelValue)."""

from __future__ import annotations

from typing import Callable

import pytest

from cni_lab import model, policy
from cni_lab.errors import LabError

GOOD_KEYS = ["simple", "now-with-dashes", "1-starts-with-num", "1234", "simple/simple", "now-with-dashes/simple",
             "now-with-dashes/now-with-dashes", "now.with.dots/simple", "now-with.dashes-and.dots/simple",
             "1-num.2-num/3-num", "1234/5678", "1.2.3.4/5678", "Uppercase_Is_OK_123", "example.com/Uppercase_Is_OK_123",
             "requests.storage-foo", "a" * 63, "a" * 253 + "/" + "b" * 63]
BAD_KEYS = ["nospecialchars%^=@", "cantendwithadash-", "-cantstartwithadash-", "only/one/slash", "Example.com/abc",
            "example_com/abc", "example.com/", "/simple", "a" * 64, "a" * 254 + "/abc", "", 1, None]
GOOD_VALUES = ["simple", "now-with-dashes", "1-starts-with-num", "end-with-num-1", "1234", "a" * 63, ""]
BAD_VALUES = ["nospecialchars%^=@", "Tama-nui-te-rā.is.Māori.sun", "\\backslashes\\are\\bad", "-starts-with-dash",
              "ends-with-dash-", ".starts.with.dot", "ends.with.dot.", "a" * 64, 1, None]
EXAMPLES = ([(model.is_label_key, k, True) for k in GOOD_KEYS] + [(model.is_label_key, k, False) for k in BAD_KEYS]
            + [(model.is_label_value, v, True) for v in GOOD_VALUES] + [(model.is_label_value, v, False) for v in BAD_VALUES])


@pytest.mark.parametrize(("rule", "text", "valid"), EXAMPLES,
                         ids=[f"{rule.__name__}-{str(text)[:20]}-{valid}" for rule, text, valid in EXAMPLES])
def test_kubernetes_examples(rule: Callable[[object], bool], text: object, valid: bool) -> None:
    assert rule(text) is valid


def test_a_dns_subdomain_is_lowercase_labels_of_253_at_most() -> None:
    assert model.is_dns_subdomain("a.b-c.example.com") and model.is_dns_subdomain("a" * 253)
    assert not any(model.is_dns_subdomain(s) for s in ("a" * 254, "Example.com", "-a", "a.", "a..b", "", 3))


def scenario_problems(labels: dict[str, object]) -> list[str]:
    doc = {"name": "lab", "nodes": [{"name": "n1", "pods": [{"name": "a", "labels": labels}]}]}
    try:
        model.load_document(doc, "s.yaml")
    except LabError as e:
        return list(e.problems)
    return []


def policy_problems(labels: dict[str, object]) -> list[str]:
    doc = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "p"},
           "spec": {"podSelector": {"matchLabels": labels}}}
    try:
        policy.parse(doc, "p.yaml")
    except LabError as e:
        return list(e.problems)
    return []


def test_both_readers_refuse_what_kubernetes_refuses_each_in_its_own_words() -> None:
    key = "a" * 254 + "/abc"  # a prefix over 253: the one case the two readers once disagreed on
    assert scenario_problems({key: "x"}) == [f"s.yaml: nodes[0].pods[0].labels.{key}: {key!r} is not a valid label key"]
    assert policy_problems({key: "x"}) == [f"p.yaml: spec.podSelector.matchLabels.{key}: {key!r} is not a valid label key"]
    assert scenario_problems({"k": "-x"}) == [
        "s.yaml: nodes[0].pods[0].labels.k: '-x' is not a valid label value (up to 63 of [A-Za-z0-9-_.])"]
    assert policy_problems({"k": "-x"}) == ["p.yaml: spec.podSelector.matchLabels.k: '-x' is not a valid label value"]


def test_a_scenario_takes_a_yaml_number_as_its_text_and_a_policy_does_not() -> None:
    """A scenario's `version: 2` is the label "2"; the API server refuses a number in a map of strings."""
    assert scenario_problems({"version": 2}) == []
    assert policy_problems({"version": 2}) == ["p.yaml: spec.podSelector.matchLabels.version: 2 is not a valid label value"]
