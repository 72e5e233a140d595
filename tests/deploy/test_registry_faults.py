"""The fault matrix on a config with a registry: every fault kind, before and after, at every
command a registry (and an adopted data volume) adds to a deploy: the host's registry login,
the volume probe, and the image inventory and prune after promote.

tests/deploy/test_orchestration.py's matrix runs the shipped config, which has neither. Here the
host is the same scripted one (real `sh` over a temp folder, the scripted engine); only the
registry's HTTP answer (a tag's digest) is a stand-in, since pins are resolved from where the
tool runs, before anything reaches the host (tests/deploy/test_registry_deploy.py asks a real
registry). Before promote a fault ends on v1 (its pinned images, `current`, one audit line,
one-line error, no lock); after promote on v2 live with a warning, every kept image kept.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.test_orchestration import HANDLERS, KINDS, FakeClock, World, _secrets
from tests.fake.host import FakeHost, Fault
from vedfin_ops.config.loader import config_from_dict
from vedfin_ops.remote.registry import Registry, RegistryError
from vedfin_ops.run.env_run import listing
from vedfin_ops.run.interrupts import HANDLED
from vedfin_ops.run.operation import RunFailed

SERVER = "127.0.0.1:5000"  # never contacted: see `_digest`
VOLUME = "dokploy-postgres-data"
PASSWORD = "registry-pass-8d1f0c"
# the commands a registry (and an adopted volume) add to a v1 -> v2 deploy: with the apps
# alone changed, the login and the images' pull beside the backup, and the image prune after
# promote; with the
# shared stack changed too, the login before the volume probe, and the probe (its prune after
# promote is the same as the apps' one)
REGISTRY_STEPS = {"apps": {"registry login", "pull images", "image inventory", "prune images"},
                  "shared": {"registry login", "pull images", "check postgres.volume"}}


def _digest(self: Registry, image: str) -> str:
    """The registry's answer for a tag: one digest per `repo:tag`, as if pushed once."""
    return "sha256:" + hashlib.sha256(image.encode()).hexdigest()


def _data(shipped_data: dict[str, Any], base: Path, change: str = "apps") -> dict[str, Any]:
    """The shipped config pulling from a registry, adopting Dokploy's postgres volume, and
    keeping one release besides the live one (so v2's promote prunes v0 and its images).
    `shared`: v2's config also changes redis, so the shared stack (and the probe) move."""
    data = copy.deepcopy(shipped_data)
    data["remote"] = {**data.get("remote", {}), "baseDir": str(base), "keepReleases": 1}
    for app in data["applications"]:
        app["image"] = f"{SERVER}/vedfin/{app['name'].split('-')[0]}"
    data["registry"] = {"server": SERVER, "username": "deployer",
                        "password": "${REGISTRY_PASSWORD}"}
    data["secrets"]["shared"]["REGISTRY_PASSWORD"] = "manual"
    data["postgres"]["volume"] = {"name": VOLUME, "external": True}
    if change == "shared":
        data["redis"]["image"] = "redis:7.4-alpine"
    return data


def _world(mp: pytest.MonkeyPatch, root: Path, data: dict[str, Any]) -> World:
    config = config_from_dict(data, "dokploy.yaml")
    _secrets(mp, config)
    mp.setenv("REGISTRY_PASSWORD", PASSWORD)
    mp.setattr(Registry, "digest", _digest)
    return World(root, config, FakeHost(root), FakeClock())


@pytest.fixture(scope="module")
def registry_host(tmp_path_factory: pytest.TempPathFactory, shipped_data: dict[str, Any]
                  ) -> Iterator[tuple[Path, Path, dict[str, dict[str, Any]]]]:
    """A host where v0 then v1 went live from the registry onto the adopted volume; each
    case starts from a copy of it."""
    root = tmp_path_factory.mktemp("registryhost")
    configs = {change: _data(shipped_data, root / "srv", change) for change in REGISTRY_STEPS}
    with pytest.MonkeyPatch.context() as mp:
        world = _world(mp, root, configs["apps"])
        world.host.set_engine(volumes={VOLUME: "17"})  # Dokploy's data, PostgreSQL 17
        for tag in ("v0", "v1"):
            assert world.deploy(tag).result == "ok", world.said
    saved = root.parent / f"{root.name}-saved"
    shutil.copytree(root, saved, symlinks=True)
    yield root, saved, configs
    shutil.rmtree(saved, ignore_errors=True)


def _fresh(registry_host: tuple[Path, Path, dict[str, dict[str, Any]]],
           mp: pytest.MonkeyPatch, change: str) -> World:
    root, saved, configs = registry_host
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(saved, root, symlinks=True)
    return _world(mp, root, configs[change])


@pytest.fixture(scope="module")
def clean_steps(registry_host: tuple[Path, Path, dict[str, dict[str, Any]]]
                ) -> dict[str, list[tuple[str, int]]]:
    """(what, n) of every command a clean v1 -> v2 deploy sends, per config change."""
    steps: dict[str, list[tuple[str, int]]] = {}
    for change in REGISTRY_STEPS:
        with pytest.MonkeyPatch.context() as mp:
            world = _fresh(registry_host, mp, change)
            assert world.deploy("v2").result == "ok", world.said
        seen: dict[str, int] = {}
        steps[change] = []
        for what in world.host.commands:
            seen[what] = seen.get(what, 0) + 1
            steps[change].append((what, seen[what]))
    return steps


def _images(world: World, stack: str) -> dict[str, str]:
    return world.host.images(stack)


def assert_back_on_v1(world: World, error: BaseException, outcome: str,
                      before: dict[str, Any]) -> None:
    """The env and the shared stack run what they ran before, and the records say so."""
    world.settle()
    state = listing(world.host, world.layout)  # type: ignore[arg-type]
    assert state.current == before["current"] and state.state(state.current) == "good"
    assert world.env_images() == before["env"]
    assert _images(world, "vedfin-shared") == before["shared"]
    assert Path(world.layout.shared_hash).read_text() == before["shared_hash"]
    new = [(r, s) for r, s in state.releases if r not in before["releases"]]
    assert all(s in ("failed", "interrupted") for _, s in new), new
    last = world.audit()[-1]
    assert (last["action"], last["result"], last["tag"]) == ("deploy", outcome, "v2"), last
    assert isinstance(error, RunFailed), repr(error)
    assert "\n" not in str(error) and str(error).startswith(f"deploy production {outcome}:")
    assert not Path(world.layout.lock).exists()
    assert not Path(world.layout.shared_lock).exists()
    assert world.host.engine().get("containers", {}) == {}
    assert {sig: signal.getsignal(sig) for sig in HANDLED} == HANDLERS


def assert_v2_live_with_a_warning(world: World, result: Any, before: dict[str, Any]) -> None:
    """After promote: v2 stands, said with a warning; no image a kept release names is gone."""
    world.settle()
    state = listing(world.host, world.layout)  # type: ignore[arg-type]
    assert result.result == "ok" and state.current == result.release
    assert state.state(result.release) == "good" and state.meta["tag"] == "v2"
    pinned = state.meta["images"]
    assert world.env_images() == pinned and all(":v2@sha256:" in i for i in pinned.values())
    assert (world.audit()[-1]["action"], world.audit()[-1]["result"]) == ("deploy", "ok")
    assert any(line.startswith("warning:") for line in world.said), world.said
    held = set(world.host.engine()["images"])
    kept = {ref.split("@")[1] for ref in [*pinned.values(), *before["env"].values()]}
    assert kept <= held
    assert not Path(world.layout.lock).exists()
    assert not Path(world.layout.shared_lock).exists()


def _before(world: World) -> dict[str, Any]:
    state = listing(world.host, world.layout)  # type: ignore[arg-type]
    world.host.commands.clear()
    return {"current": state.current, "releases": {r for r, _ in state.releases},
            "env": world.env_images(), "shared": _images(world, "vedfin-shared"),
            "shared_hash": Path(world.layout.shared_hash).read_text()}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("after", [False, True], ids=["before", "after"])
@pytest.mark.parametrize("change", sorted(REGISTRY_STEPS))
def test_any_fault_at_a_step_the_registry_adds_ends_on_one_known_release(
        registry_host: tuple[Path, Path, dict[str, dict[str, Any]]],
        clean_steps: dict[str, list[tuple[str, int]]], monkeypatch: pytest.MonkeyPatch,
        change: str, after: bool, kind: str) -> None:
    steps = [(what, n) for what, n in clean_steps[change] if what in REGISTRY_STEPS[change]]
    assert {what for what, _ in steps} == REGISTRY_STEPS[change]  # each is reached
    outcome = "interrupted" if kind in ("ctrl-c", "sigterm", "sighup") else "failed"
    failures = []
    for what, nth in steps:
        world = _fresh(registry_host, monkeypatch, change)
        before = _before(world)
        assert all(":v1@sha256:" in i for i in before["env"].values())
        world.host.inject(Fault(what, nth, kind, after=after))
        try:
            try:
                result = world.deploy("v2")
            except BaseException as exc:  # what it ends in is the invariant checked here
                assert_back_on_v1(world, exc, outcome, before)
            else:
                assert_v2_live_with_a_warning(world, result, before)
                # an error there is a warning, and the steps after it still run; a signal
                # stops them (the release stands)
                assert any(line.startswith("done:") for line in world.said) == (
                    outcome == "failed"), world.said
            assert world.host.faults[0].fired
            said = "\n".join(world.said) + Path(world.layout.audit).read_text()
            assert PASSWORD not in said
        except AssertionError as broken:
            failures.append(f"{what}#{nth}: {broken}")
    assert failures == []


@pytest.mark.parametrize("kind", ["remote", "exception", "ctrl-c"])
def test_a_fault_resolving_the_pins_changes_nothing_on_the_host(
        registry_host: tuple[Path, Path, dict[str, dict[str, Any]]],
        monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    """Pins are resolved from where the tool runs, before the lock: the host never sees one
    command (a signal there is the tool's default one: nothing to put back)."""
    world = _fresh(registry_host, monkeypatch, "apps")
    engine = json.dumps(world.host.engine(), sort_keys=True)
    before = _before(world)
    fault: BaseException = {"remote": RegistryError(f"registry {SERVER} is not reachable "
                                                    f"(ConnectionError)"),
                            "exception": ValueError("a bug resolving a digest"),
                            "ctrl-c": KeyboardInterrupt()}[kind]

    def fails(self: Registry, image: str) -> str:
        raise fault

    monkeypatch.setattr(Registry, "digest", fails)
    with pytest.raises(type(fault)):
        world.deploy("v2")
    assert world.host.commands == []
    assert json.dumps(world.host.engine(), sort_keys=True) == engine
    state = listing(world.host, world.layout)  # type: ignore[arg-type]
    assert {r for r, _ in state.releases} == before["releases"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("after", [False, True], ids=["before", "after"])
def test_a_fault_at_a_rollbacks_registry_login_leaves_the_live_release_serving(
        registry_host: tuple[Path, Path, dict[str, dict[str, Any]]],
        monkeypatch: pytest.MonkeyPatch, after: bool, kind: str) -> None:
    """A rollback pulls the previous release's pinned images: its login fails like any step
    (v1 serving, one audit line, no lock), and the next rollback logs in and runs v0's."""
    from vedfin_ops.deploy.rollback import rollback

    world = _fresh(registry_host, monkeypatch, "apps")
    before = _before(world)
    world.host.inject(Fault("registry login", 1, kind, after=after))
    outcome = "interrupted" if kind in ("ctrl-c", "sigterm", "sighup") else "failed"

    def back() -> str:
        return rollback(world.host, world.config, "production",  # type: ignore[arg-type]
                        say=world.said.append, clock=world.clock.clock(),
                        verify_fn=world.hooks().verify)

    try:
        back()
    except BaseException as exc:  # what it ends in is the invariant checked here
        error: BaseException = exc
    else:
        pytest.fail("the rollback ended ok through a fault at its registry login")
    assert world.host.faults[0].fired
    assert isinstance(error, RunFailed), repr(error)
    assert "\n" not in str(error) and str(error).startswith(f"rollback production {outcome}:")
    world.settle()
    state = listing(world.host, world.layout)  # type: ignore[arg-type]
    assert state.current == before["current"] and world.env_images() == before["env"]
    assert (world.audit()[-1]["action"], world.audit()[-1]["result"]) == ("rollback", outcome)
    assert not Path(world.layout.lock).exists()
    assert {sig: signal.getsignal(sig) for sig in HANDLED} == HANDLERS
    if kind != "remote":
        return
    target = back()
    state = listing(world.host, world.layout)  # type: ignore[arg-type]
    assert state.current == target and state.meta["tag"] == "v0"
    assert world.env_images() == state.meta["images"]
