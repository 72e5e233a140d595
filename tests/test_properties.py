"""Properties that must hold for any input, found by hypothesis rather than by us."""

from __future__ import annotations

import contextlib
import copy
import re
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vedfin_ops import capacity_report, render
from vedfin_ops.config.loader import config_from_dict, parse_yaml
from vedfin_ops.config.model import secret_refs
from vedfin_ops.config.tags import TAG_RE, check_tag
from vedfin_ops.config.units import format_mib, parse_mib, parse_seconds
from vedfin_ops.errors import ConfigError, UsageError

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
        "verify": {"allowNoChecks": True},  # no app has a domain: no smoke checks
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


# --- config values that would change a rendered file's structure ---

variable = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,15}", fullmatch=True)
line_break = st.sampled_from(["\n", "\r", "\r\n"])
one_line = st.text(max_size=40).filter(lambda v: not ({"\n", "\r", "\0"} & set(v))
                                       and not secret_refs(v))


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture],
          deadline=None)
@given(index=st.integers(0, 5), key=variable, head=st.text(max_size=20),
       brk=line_break, tail=st.text(max_size=20), mapping=st.booleans())
def test_any_env_value_with_a_line_break_is_refused_with_its_key_path(
        shipped_data: dict[str, Any], index: int, key: str, head: str, brk: str, tail: str,
        mapping: bool) -> None:
    value = head + brk + tail
    doc = copy.deepcopy(shipped_data)
    doc["applications"][index]["environment"] = {key: value} if mapping else [f"{key}={value}"]
    with pytest.raises(ConfigError) as info:
        config_from_dict(doc)
    line = info.value.line()
    assert line.startswith(f"error: dokploy.yaml: applications[{index}].environment.{key}: ")
    assert "\n" not in line and "\r" not in line


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture],
          deadline=None)
@given(key=variable, value=one_line, mapping=st.booleans())
def test_any_one_line_env_value_reaches_the_env_file_as_written(
        shipped_data: dict[str, Any], key: str, value: str, mapping: bool) -> None:
    doc = copy.deepcopy(shipped_data)
    doc["applications"][1]["environment"] = {key: value} if mapping else [f"{key}={value}"]
    files = render(config_from_dict(doc), "production")
    assert f"\n{key}={value}\n" in files["env/web-production.env"]


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=24))
def test_env_keys_are_refused_unless_identifiers(key: str) -> None:
    doc = {"applications": [{"name": "api-dev", "domain": "api.example.com",
                             "resources": {"memory": "64m", "cpus": 0.1},
                             "environment": {key: "x"}}],
           "vps": {"memory": "4g", "cpus": 2}}
    try:
        config = config_from_dict(doc)
    except ConfigError as exc:
        assert exc.line().startswith("error: dokploy.yaml: applications[0].environment: ")
        assert not key.isidentifier() or not key.isascii()
        return
    assert key.isascii() and key.isidentifier()
    assert config.applications[0].environment == {key: "x"}


def _undollar(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("$$", "$")
    return [_undollar(v) for v in value]


def _lone_dollar(value: Any) -> bool:
    if isinstance(value, str):
        return "$" in value.replace("$$", "")
    return any(_lone_dollar(v) for v in value)


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture],
          deadline=None)
@given(words=st.lists(st.text(max_size=16), min_size=1, max_size=4),
       image=st.text(min_size=1, max_size=30), path=st.text(max_size=20))
def test_any_dollar_in_a_stack_string_is_doubled_and_round_trips(
        shipped_data: dict[str, Any], words: list[str], image: str, path: str) -> None:
    """docker stack deploy reads `$$` as `$`: what the config says is what the task gets."""
    doc = copy.deepcopy(shipped_data)
    doc["applications"][0]["healthcheck"] = {"command": words}
    doc["postgres"]["healthcheck"] = {"command": ["pg_isready", *words]}
    doc["postgres"]["image"] = image
    path = "/" + "".join(c for c in path if not c.isspace())
    doc["applications"][1]["healthcheck"] = {"path": path}
    files = render(config_from_dict(doc), "production")
    env_stack = yaml.safe_load(files["stacks/production.yml"])["services"]
    shared = yaml.safe_load(files["stacks/shared.yml"])["services"]
    api_test = env_stack["api-production"]["healthcheck"]["test"]
    pg = shared["postgres"]
    web_test = env_stack["web-production"]["healthcheck"]["test"]
    for loaded in (api_test, pg["image"], pg["healthcheck"]["test"], web_test):
        assert not _lone_dollar(loaded)
    assert _undollar(api_test) == ["CMD", *words]
    assert _undollar(pg["healthcheck"]["test"]) == ["CMD", "pg_isready", *words]
    assert _undollar(pg["image"]) == image
    assert path in _undollar(web_test[1]) or "'" in path  # sh-quoted inside the command


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=130), st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\n?",
                                                      fullmatch=True)))
def test_one_tag_rule_for_flag_render_and_config(tag: str) -> None:
    """check_tag, render(tag=...) and the config's own `tag` accept exactly the same tags."""
    ok = TAG_RE.fullmatch(tag) is not None
    assert ok == (len(tag) <= 128 and tag == tag.strip() and "\n" not in tag and tag != ""
                  and tag[0] not in ".-" and all(c.isascii() and (c.isalnum() or c in "_.-")
                                                 for c in tag))
    try:
        check_tag(tag)
        flag_ok = True
    except UsageError as exc:
        assert str(exc).startswith("--tag: ") and "\n" not in str(exc).replace("\\n", "")
        flag_ok = False
    doc = {"applications": [{"name": "api-dev", "domain": "api.example.com",
                             "resources": {"memory": "64m", "cpus": 0.1}}],
           "vps": {"memory": "4g", "cpus": 2}, "tag": tag}
    try:
        config = config_from_dict(doc)
        config_ok = True
    except ConfigError as exc:
        assert exc.line().startswith("error: dokploy.yaml: tag: ")
        config_ok = False
    assert flag_ok == config_ok == ok
    if ok:
        stack = yaml.safe_load(render(config, "dev", tag=tag)["stacks/dev.yml"])
        assert stack["services"]["api-dev"]["image"] == f"vedfinance/api:{tag}"


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(["k", "m", "g"]))
def test_one_size_grammar_reads_the_config_binary_and_dockers_output_decimal(
        number: int, letter: str) -> None:
    """`1GB` in a memory limit is 1 GiB to Docker; `1GB` in `docker stats` is 10^9 bytes."""
    from vedfin_ops.config.units import size_mib

    power = {"k": 1, "m": 2, "g": 3}[letter]
    assert size_mib(f"{number}{letter}iB", decimal=True) == \
        size_mib(f"{number}{letter}b", decimal=False) == number * 1024 ** power / 1048576
    assert size_mib(f"{number}{letter.upper()}B", decimal=True) == pytest.approx(
        number * 1000 ** power / 1048576)


ENV_NAME = r"[a-z][a-z0-9]*(-[a-z0-9]+)*"  # the rule as the README states it
RESERVED_ENVS = {"cluster", "shared", "backups", "bin"}


def _with_env(shipped_data: dict[str, Any], name: str) -> dict[str, Any]:
    doc = copy.deepcopy(shipped_data)
    doc["environments"][name] = {"database": "qa_db"}
    return doc


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture],
          deadline=None)
@given(st.text(max_size=16) | st.from_regex(ENV_NAME, fullmatch=True))
def test_an_env_name_loads_only_when_it_is_a_plain_lower_case_name(
        shipped_data: dict[str, Any], name: str) -> None:
    """Whatever the name, either it loads and is safe as a folder, stack and script name, or
    it is one error line naming it; an env need not have apps to be checked."""
    if name in ("dev", "staging", "production"):
        return
    try:
        config = config_from_dict(_with_env(shipped_data, name))
    except ConfigError as exc:
        assert (exc.file, exc.key) == ("dokploy.yaml", f"environments.{name}")
        assert "\n" not in exc.line() and "\r" not in exc.line()
        assert re.fullmatch(ENV_NAME, name) is None or name in RESERVED_ENVS
        return
    assert re.fullmatch(ENV_NAME, name) and name not in RESERVED_ENVS
    assert set(name) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")
    assert config.apps(name) == []


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture],
          deadline=None)
@given(good=st.from_regex(ENV_NAME, fullmatch=True), at=st.integers(0, 20),
       bad=st.sampled_from([*"/.;$`'\" \n\t\\&|<>*?~:_A", "..", "\x00", "é"]))
def test_an_env_name_with_any_path_or_shell_character_is_refused(
        shipped_data: dict[str, Any], good: str, at: int, bad: str) -> None:
    name = good[:at] + bad + good[at:]
    with pytest.raises(ConfigError) as info:
        config_from_dict(_with_env(shipped_data, name))
    assert "is not an environment name" in info.value.line()
