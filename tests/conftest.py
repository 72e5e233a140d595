"""Shared helpers: the shipped config as data, and a way to load a changed copy of it."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from vedfin_ops.config.loader import config_from_dict
from vedfin_ops.config.model import Config

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "dokploy.yaml"
# the first line of an OpenSSH private key, built so that no tracked file spells one: the
# tests' stand-ins for a private key are this and a few bytes, never a key
PRIVATE_KEY_HEAD = "-----BEGIN OPENSSH " + "PRIVATE KEY-----"
PRIVATE_KEY_TAIL = "-----END OPENSSH " + "PRIVATE KEY-----"
RUNBOOK_SNIPPET = ROOT / "tests" / "data" / "runbook-snippet.yaml"
NO_NETDATA = "/nonexistent/vedfin-tests/netdata"


# see tests/integration/conftest.py
SWITCHING_MODULES = ("test_ci_recipe.py", "test_https.py", "test_real_apps.py",
                     "test_traefik.py")
LAST_MODULE = "test_zz_sandbox_down.py"


def _integration(item: pytest.Item) -> bool:
    return item.path.parent.name == "integration"


def _nodes(item: pytest.Item) -> bool:
    """tests/nodes: the sandbox's N-node swarm, engines of its own (see its module)."""
    return item.path.parent.name == "nodes"


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Integration tests first, those that switch the sandbox's config last among them, one
    module after the other (production goes from one config to the next without a deploy
    back to the default in between), then `sandbox.down`'s. Under xdist (the default
    `-n 2 --dist loadgroup`) the integration tests are one group, on one worker, in this
    order (one sandbox, one driver), and the unit tests the other group, on the other.

    The nodes' tests (a swarm of engines of their own) come last under xdist, so the unit
    tests' worker takes them after the unit tests, beside the sandbox's tests (the group
    after `unit` goes to the first worker that runs short); in one process they run before
    the config switches and sandbox.down."""
    under_xdist = bool(os.environ.get("PYTEST_XDIST_WORKER"))

    def rank(item: pytest.Item) -> float:
        if _nodes(item):
            return 4 if under_xdist else 0.5
        if not _integration(item):
            return 3
        name = item.path.name
        return 2 if name == LAST_MODULE else 1 if name in SWITCHING_MODULES else 0

    items.sort(key=rank)  # stable: the collection's order inside each rank
    for item in items:
        group = "sandbox" if _integration(item) else "nodes" if _nodes(item) else "unit"
        item.add_marker(pytest.mark.xdist_group(group))


def _ancestors() -> dict[Path, int]:
    """The folders above the checkout, the interpreter and the temp folders, with their
    modes: no test or sandbox step may widen one (a 0700 /root opened to every user, as
    pgserver's own start-up does as root)."""
    import sys
    import tempfile

    places = [ROOT, Path(sys.executable).resolve(), Path(tempfile.gettempdir()),
              Path.home()]
    folders = {parent for place in places for parent in [place, *place.parents]
               if parent.is_dir()}
    return {folder: folder.stat().st_mode & 0o7777 for folder in sorted(folders)}


MODES_BEFORE = _ancestors()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Fail the run when a folder outside the tests' own temp and sandbox folders was
    widened (checked once, by the process that started the run)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    widened = [f"{folder} {before:o} -> {now:o}" for folder, now in _ancestors().items()
               if (before := MODES_BEFORE.get(folder)) is not None and now & ~before]
    if widened:
        writer = session.config.get_terminal_writer()
        writer.line()
        writer.line(
            f"error: the tests widened folders of this machine: {'; '.join(widened)}", red=True)
        session.exitstatus = 1


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Beside the sandbox's worker, the unit tests' worker runs at the lowest CPU priority
    (root only; CPU, not I/O): it mostly takes what the sandbox's tests leave (they mostly
    wait on the engine), so it barely slows a rollout under load or a health check."""
    if os.environ.get("PYTEST_XDIST_WORKER") and os.geteuid() == 0:
        # the nodes' engines inherit it: below the sandbox's tests, above the unit tests
        os.setpriority(os.PRIO_PROCESS, 0, 0 if _integration(item) else 10 if _nodes(item)
                       else 19)


@pytest.fixture(autouse=True)
def scripted_hosts_stay_scripted() -> Iterator[None]:
    """A scripted host's command that would have reached this machine's own Netdata fails the
    test (the host refuses to run it; the tool would only have warned)."""
    from tests.fake.host import TOUCHED_MACHINE

    TOUCHED_MACHINE.clear()
    yield
    assert TOUCHED_MACHINE == [], f"reached this machine's /etc/netdata: {TOUCHED_MACHINE}"


@pytest.fixture(autouse=True)
def receipts_ask_only_this_machine(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A zero-downtime probe that would ask a domain that is not this machine's (the shipped
    config's, from a scripted host's run) fails the test: test traffic goes to 127.0.0.1
    only (turn `verify.receipt` off, or give the run a scripted edge: World.hooks)."""
    from urllib.parse import urlsplit

    from vedfin_ops.checks import receipt

    asked: list[str] = []
    real = receipt.session_for

    def session_for(endpoint: Any) -> Any:
        if urlsplit(endpoint.url).hostname not in ("127.0.0.1", "localhost"):
            asked.append(endpoint.url)
            raise RuntimeError(f"a test's probe may not ask {endpoint.url}")
        return real(endpoint)

    monkeypatch.setattr(receipt, "session_for", session_for)
    yield
    assert asked == [], f"a zero-downtime probe asked beyond this machine: {asked}"


@pytest.fixture(scope="session")
def shipped_data() -> dict[str, Any]:
    """The shipped config, less its off-host backup copies and its registry: the unit tests'
    hosts never reach Cloudflare or ghcr.io (tests/backups/test_offsite.py sets a local
    endpoint where it wants one, tests/deploy/test_registry_deploy.py a local registry). So
    its apps have no `build:` sections and take the default images (`vedfinance/api`);
    tests/deploy/test_build_first.py reads the shipped ones."""
    data: dict[str, Any] = yaml.safe_load(SHIPPED.read_text())
    data.get("backups", {}).pop("s3", None)
    data.pop("registry", None)
    for app in data["applications"]:
        app.pop("image", None)
        app.pop("build", None)
    # never this machine's Netdata (tests/monitoring/test_monitoring.py gives a folder where
    # it wants one)
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
    from tests.package import install

    return install(tmp_path_factory.mktemp("installed"))


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real Distribution registry on a free port holding api and web v1 and v2 (per module)."""
    from sandbox.registry import start
    from tests.registry_push import push

    server = start(tmp_path_factory.mktemp("registry"))
    try:
        for app in ("api", "web"):
            for tag in ("v1", "v2"):
                push(server.server, (server.username, server.password), str(server.ca),
                     f"vedfin/{app}", tag, f"{app} {tag}")
        yield server
    finally:
        server.stop()
