"""boto3, psycopg and the Uptime Kuma client are extras: a deploy or check-config of a config
that needs a missing one is refused in one line naming the file, the key and the extra, before
any host; reading the config (render, capacity) never needs them."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import pytest

from tests.backups.test_offsite import _with_s3
from vedfin_ops import extras
from vedfin_ops.checks.smoke import Options, checks
from vedfin_ops.config.model import Config
from vedfin_ops.deploy.pipeline import deploy
from vedfin_ops.errors import ConfigError, UsageError
from vedfin_ops.rendering.files import render


@pytest.mark.parametrize(("module", "key", "extra"), [
    ("boto3", "backups.s3", "s3"),
    ("uptime_kuma_api", "monitoring.uptimeKuma", "uptime-kuma"),
])
def test_a_config_that_needs_a_missing_extra_names_it_in_one_line(
        variant: Callable[[Callable[[dict[str, Any]], Any]], Config],
        monkeypatch: pytest.MonkeyPatch, module: str, key: str, extra: str) -> None:
    config = variant(_with_s3)  # the shipped config has Uptime Kuma; the bucket added
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    with pytest.raises(ConfigError) as caught:
        deploy(_NoHost(), config, "production", "v2")
    line = str(caught.value)
    assert caught.value.exit_code == 2
    assert line.startswith("error: dokploy.yaml: ") and f": {key}: " in line, line
    assert f"vedfin-ops[{extra}]" in line and "\n" not in line, line
    with pytest.raises(ConfigError, match=key):
        extras.check(config)  # what check-config asks


class _NoHost:
    """A host no refused deploy may reach."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the deploy reached the host ({name})")


def test_a_config_without_the_feature_loads_without_its_extra(
        variant: Callable[[Callable[[dict[str, Any]], Any]], Config],
        monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("boto3", "uptime_kuma_api", "psycopg"):
        monkeypatch.setitem(sys.modules, module, None)

    def without(data: dict[str, Any]) -> None:
        data["backups"].pop("s3", None)
        data["monitoring"].pop("uptimeKuma", None)
    config = variant(without)
    assert config.backups.s3 is None and config.monitoring.uptime_kuma is None
    extras.check(config)


def test_reading_a_config_that_uses_the_features_needs_no_extra(
        variant: Callable[[Callable[[dict[str, Any]], Any]], Config],
        monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("boto3", "uptime_kuma_api", "psycopg"):
        monkeypatch.setitem(sys.modules, module, None)
    config = variant(_with_s3)
    files = render(config, "production", tag="v2", secrets={})
    assert "stacks/production.yml" in files


def test_smoke_s_database_check_names_the_postgres_extra(
        variant: Callable[[Callable[[dict[str, Any]], Any]], Config],
        monkeypatch: pytest.MonkeyPatch) -> None:
    config = variant(lambda d: None)
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(UsageError, match=r"vedfin-ops\[postgres\]"):
        checks(config, "production", Options(database_url="postgresql://x@127.0.0.1/db"))


def test_every_extra_is_one_setup_cfg_declares() -> None:
    import configparser
    from pathlib import Path

    cfg = configparser.ConfigParser()
    cfg.read(Path(__file__).resolve().parents[2] / "setup.cfg")
    declared = set(cfg["options.extras_require"])
    assert set(extras.EXTRAS.values()) <= declared
    required = cfg["options"]["install_requires"]
    for package in ("boto3", "psycopg", "uptime-kuma"):
        assert package not in required, f"{package} is a hard dependency again"
