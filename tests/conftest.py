"""Shared helpers: the shipped config as data, and a way to load a changed copy of it."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from vedfin_ops.config.loader import config_from_dict
from vedfin_ops.config.model import Config

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "dokploy.yaml"
RUNBOOK_SNIPPET = ROOT / "tests" / "data" / "runbook-snippet.yaml"
NO_NETDATA = "/nonexistent/vedfin-tests/netdata"


@pytest.fixture(autouse=True)
def scripted_hosts_stay_scripted() -> Iterator[None]:
    """A scripted host's command that would have reached this machine's own Netdata fails the
    test (the host refuses to run it; the tool would only have warned)."""
    from tests.fake.host import TOUCHED_MACHINE

    TOUCHED_MACHINE.clear()
    yield
    assert TOUCHED_MACHINE == [], f"reached this machine's /etc/netdata: {TOUCHED_MACHINE}"


@pytest.fixture(scope="session")
def shipped_data() -> dict[str, Any]:
    """The shipped config, less its off-host backup copies: the unit tests' hosts never
    reach Cloudflare (tests/test_offsite.py sets a local endpoint where it wants one)."""
    data: dict[str, Any] = yaml.safe_load(SHIPPED.read_text())
    data.get("backups", {}).pop("s3", None)
    # never this machine's Netdata (tests/test_monitoring.py gives a folder where it wants one)
    data["monitoring"] = {**data.get("monitoring", {}), "netdataConfig": NO_NETDATA}
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
