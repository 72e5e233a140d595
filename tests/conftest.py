"""Shared helpers: the shipped config as data, and a way to load a changed copy of it."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from vedfin_ops.config.loader import config_from_dict
from vedfin_ops.config.model import Config

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "dokploy.yaml"
RUNBOOK_SNIPPET = ROOT / "tests" / "data" / "runbook-snippet.yaml"


@pytest.fixture(scope="session")
def shipped_data() -> dict[str, Any]:
    """The shipped config, less its off-host backup copies: the unit tests' hosts never
    reach Cloudflare (tests/test_offsite.py sets a local endpoint where it wants one)."""
    data: dict[str, Any] = yaml.safe_load(SHIPPED.read_text())
    data.get("backups", {}).pop("s3", None)
    return data


@pytest.fixture
def variant(shipped_data: dict[str, Any]) -> Callable[[Callable[[dict[str, Any]], Any]], Config]:
    """Load the shipped config after `change` edits a deep copy of its data."""

    def load(change: Callable[[dict[str, Any]], Any]) -> Config:
        data = copy.deepcopy(shipped_data)
        change(data)
        return config_from_dict(data, "dokploy.yaml")

    return load


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The wheel installed in a fresh virtualenv outside the repository (once per session)."""
    from .package import install

    return install(tmp_path_factory.mktemp("installed"))
