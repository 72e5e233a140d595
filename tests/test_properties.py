"""Properties that must hold for any input, found by hypothesis rather than by us."""

from __future__ import annotations

import contextlib
import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vedfin_ops import capacity_report, render
from vedfin_ops.errors import ConfigError
from vedfin_ops.loader import config_from_dict, parse_yaml
from vedfin_ops.units import format_mib, parse_mib, parse_seconds

SUFFIX = {"m": 1, "g": 1024}

junk = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=6,
)


@given(st.integers(1, 10**7), st.sampled_from(["m", "M", "mb", "MiB", "g", "G", "GB", "gib"]))
def test_sizes_parse_to_mib(number: int, unit: str) -> None:
    assert parse_mib(f"{number}{unit}") == number * SUFFIX[unit[0].lower()]


@given(st.integers(6, 10**7))
def test_formatted_size_parses_back(mib: int) -> None:
    assert parse_mib(format_mib(mib).lower()) == mib


@given(st.text(max_size=12))
def test_size_parser_only_raises_value_error(text: str) -> None:
    try:
        assert parse_mib(text) >= 0
    except ValueError as exc:
        assert str(exc)


@given(junk)
def test_duration_parser_only_raises_value_error(value: Any) -> None:
    with contextlib.suppress(ValueError):
        assert parse_seconds(value) >= 0


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out += _paths(value, (*prefix, index))
    return out


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture],
          deadline=None)
@given(data=st.data(), value=junk)
def test_any_corruption_of_the_config_is_a_config_error_or_valid(
        shipped_data: dict[str, Any], data: st.DataObject, value: Any) -> None:
    """Replace any one node of the shipped config: the loader says one line or accepts it."""
    doc = copy.deepcopy(shipped_data)
    path = data.draw(st.sampled_from(_paths(doc)))
    node: Any = doc
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    try:
        config = config_from_dict(doc)
    except ConfigError as exc:
        line = exc.line()
        assert line.startswith("error: dokploy.yaml: ") and "\n" not in line
        return
    report = capacity_report(config).to_dict()
    assert report["committed"]["memory_mb"] >= report["services_only"]["memory_mb"]
    render(config)


@settings(max_examples=200)
@given(st.text(max_size=60))
def test_any_text_parses_or_fails_with_one_line(text: str) -> None:
    try:
        parse_yaml(text, "x.yaml")
    except ConfigError as exc:
        assert exc.line().startswith("error: x.yaml: ") and "\n" not in exc.line()


apps = st.lists(
    st.tuples(st.sampled_from(["api", "web", "worker", "admin"]),
              st.sampled_from(["dev", "staging", "production"]),
              st.integers(6, 4096), st.sampled_from([0.1, 0.25, 0.5, 1.0, 1.5, 2.0]),
              st.integers(1, 4)),
    min_size=1, max_size=8, unique_by=lambda t: (t[0], t[1]))


@settings(max_examples=150)
@given(apps, st.integers(0, 3))
def test_capacity_totals_add_up(spec: list[tuple[str, str, int, float, int]],
                                surge: int) -> None:
    doc = {
        "applications": [{"name": f"{a}-{e}", "resources": {"memory": f"{m}m", "cpus": c},
                          "replicas": r} for a, e, m, c, r in spec],
        "deploymentStrategy": {"maxSurge": surge, "maxUnavailable": 0},
        "vps": {"memory": "4g", "cpus": 2, "swap": "2g"},
        "overhead": {"system": {"memory": "200m", "cpus": 0.25}},
    }
    if surge == 0:
        with pytest.raises(ConfigError, match="both 0"):
            config_from_dict(doc)
        return
    config = config_from_dict(doc)
    report = capacity_report(config).to_dict()
    apps_mb = sum(m * r for _, _, m, _, r in spec)
    assert report["services_only"]["memory_mb"] == apps_mb + 1024 + 256
    assert report["committed"]["memory_mb"] == apps_mb + 1024 + 256 + 200
    per_env = {}
    for _, e, m, _, r in spec:
        per_env[e] = per_env.get(e, 0) + m * min(surge, r)
    assert report["surge_peak"]["memory_mb"] == report["committed"]["memory_mb"] + max(
        per_env.values())
    for env in {e for _, e, *_ in spec}:
        scoped = capacity_report(config, env).to_dict()
        assert scoped["committed"]["memory_mb"] <= report["committed"]["memory_mb"]
