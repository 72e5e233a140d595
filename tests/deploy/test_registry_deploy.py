"""A deploy whose images come from a registry (a real Distribution registry; the host is the
scripted fake of tests/fake): resolved and pinned before anything changes, the host logged in
with the password on stdin, the engine handed the login, and the password nowhere in sight."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from sandbox.registry import RegistryServer
from tests.deploy.test_orchestration import FakeClock, World, _secrets
from tests.fake.host import FakeHost
from tests.registry_push import push
from vedfin_ops.config.loader import config_from_dict
from vedfin_ops.remote.registry import RegistryError
from vedfin_ops.run.env_run import listing


def _world(tmp_path: Path, shipped_data: dict[str, Any], registry: RegistryServer,
           monkeypatch: pytest.MonkeyPatch, password: str | None = None) -> World:
    data = copy.deepcopy(shipped_data)
    data.setdefault("remote", {})["baseDir"] = str(tmp_path / "srv")
    for app in data["applications"]:
        app["image"] = f"{registry.server}/vedfin/{app['name'].split('-')[0]}"
    data["registry"] = {"server": registry.server, "username": registry.username,
                        "password": "${REGISTRY_PASSWORD}", "caRoot": str(registry.ca)}
    data["secrets"]["shared"]["REGISTRY_PASSWORD"] = "manual"
    config = config_from_dict(data, "dokploy.yaml")
    _secrets(monkeypatch, config)
    monkeypatch.setenv("REGISTRY_PASSWORD", password or registry.password)
    return World(tmp_path, config, FakeHost(tmp_path), FakeClock())


def _everything_printed(world: World) -> str:
    audit = Path(world.layout.audit)
    return "\n".join(world.said) + (audit.read_text() if audit.exists() else "")


def test_a_deploy_pins_every_image_by_digest_and_logs_in_on_stdin(
        tmp_path: Path, shipped_data: dict[str, Any], registry: RegistryServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    world = _world(tmp_path, shipped_data, registry, monkeypatch)
    assert world.deploy("v1").result == "ok"
    images = world.env_images()
    assert all("@sha256:" in ref and ":v1@" in ref for ref in images.values()), images
    state = listing(world.host, world.layout)  # type: ignore[arg-type]
    assert set(state.meta["images"].values()) == set(images.values())
    engine = world.host.engine()
    assert engine["registry_auth"] is True
    assert engine["logins"] == [{"server": registry.server, "user": registry.username,
                                 "password": registry.password, "stdin": True}]
    assert registry.password not in _everything_printed(world)
    # not in a command line either (a here-document is one): `ps` shows those to everyone
    assert world.host.command_lines and not any(
        registry.password in line for line in world.host.command_lines)


def test_a_re_pushed_tag_is_a_new_release_and_rollback_runs_the_old_digest(
        tmp_path: Path, shipped_data: dict[str, Any], registry: RegistryServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from vedfin_ops.deploy.rollback import rollback

    world = _world(tmp_path, shipped_data, registry, monkeypatch)
    assert world.deploy("v2").result == "ok"
    before = world.env_images()
    assert world.deploy("v2").result == "noop"
    push(registry.server, (registry.username, registry.password), str(registry.ca),
         "vedfin/api", "v2", "api v2, rebuilt")
    assert world.deploy("v2").result == "ok"  # same tag, new bits: not a no-op
    after = world.env_images()
    api = next(name for name in after if "api" in name)
    assert after[api] != before[api] and after[api].startswith(before[api].split("@")[0])
    rollback(world.host, world.config, "production", say=world.said.append,  # type: ignore[arg-type]
             clock=world.clock.clock(), verify_fn=world.hooks().verify)
    assert world.env_images() == before


@pytest.mark.parametrize("problem", ["missing tag", "wrong password"])
def test_a_missing_tag_or_a_refused_login_stops_before_anything_changes(
        tmp_path: Path, shipped_data: dict[str, Any], registry: RegistryServer,
        monkeypatch: pytest.MonkeyPatch, problem: str) -> None:
    wrong = "wrong-password-1234" if problem == "wrong password" else None
    world = _world(tmp_path, shipped_data, registry, monkeypatch, password=wrong)
    tag = "v404" if problem == "missing tag" else "v1"
    with pytest.raises(RegistryError) as info:
        world.deploy(tag)
    assert info.value.exit_code == 1
    if problem == "missing tag":
        assert f"image {registry.server}/vedfin/api:v404 not found" in str(info.value)
    else:
        assert "login refused" in str(info.value) and "wrong-password-1234" not in str(
            info.value)
    assert world.host.commands == []  # not even the lock: nothing changed on the host
    assert not Path(world.layout.releases).exists()


def test_the_registry_password_must_be_a_shared_secret_reference(
        shipped_data: dict[str, Any]) -> None:
    from vedfin_ops.errors import ConfigError

    data = copy.deepcopy(shipped_data)
    for app in data["applications"]:
        app["image"] = f"127.0.0.1:5000/vedfin/{app['name'].split('-')[0]}"
    data["registry"] = {"server": "127.0.0.1:5000", "username": "u", "password": "hunter2"}
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, "dokploy.yaml")
    assert "registry.password" in info.value.line() and "hunter2" not in info.value.line()
    data["registry"]["password"] = "${NOT_DECLARED}"
    with pytest.raises(ConfigError, match="not a shared secret"):
        config_from_dict(data, "dokploy.yaml")
    data["registry"]["password"] = "${R}"
    data["secrets"]["shared"]["R"] = "manual"
    data["applications"][0]["image"] = "elsewhere/api"
    with pytest.raises(ConfigError, match=r"applications\[0\]\.image.*not in the registry"):
        config_from_dict(data, "dokploy.yaml")


def test_the_stack_file_carries_the_pinned_image(tmp_path: Path, shipped_data: dict[str, Any],
                                                 registry: RegistryServer,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    world = _world(tmp_path, shipped_data, registry, monkeypatch)
    result = world.deploy("v1")
    stack = Path(world.layout.release(result.release), "stacks", "production.yml").read_text()
    assert f"{registry.server}/vedfin/api:v1@sha256:" in stack
    meta = json.loads(Path(world.layout.release(result.release), "release.json").read_text())
    assert all("@sha256:" in ref for ref in meta["images"].values())


def test_a_good_deploy_prunes_images_no_kept_release_names(
        tmp_path: Path, shipped_data: dict[str, Any], registry: RegistryServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """keepReleases 1: after v1, v2 and a re-pushed v2, v1's release folder goes and with
    it v1's images; the current and the previous good release keep theirs."""
    world = _world(tmp_path, shipped_data, registry, monkeypatch)
    world.config.remote.keep_releases = 1
    assert world.deploy("v1").result == "ok"
    v1 = set(world.env_images().values())
    assert world.deploy("v2").result == "ok"
    v2 = set(world.env_images().values())
    push(registry.server, (registry.username, registry.password), str(registry.ca),
         "vedfin/api", "v2", "api v2, rebuilt again")
    assert world.deploy("v2").result == "ok"
    now = set(world.env_images().values())
    held = set(world.host.engine()["images"])  # digests the engine still holds
    digests = {ref.split("@")[1] for ref in v1 | v2 | now}
    assert {ref.split("@")[1] for ref in v1} & held == set(), "v1 is pruned"
    assert {ref.split("@")[1] for ref in v2 | now} <= held, "current and previous kept"
    assert held <= digests
    assert any(line.startswith("pruned 2 of 2 old images") for line in world.said)


def test_prunable_images_never_judges_an_image_without_a_digest() -> None:
    from vedfin_ops.deploy.images import prunable_images

    keep = "sha256:" + "a" * 64
    old = "sha256:" + "b" * 64
    inventory = "\n".join([f"keep {keep}", f"image r/api {keep} id1", f"image r/api {old} id2",
                           "image r/api <none> id3", f"image r/web {old} id1",
                           "garbage line", ""])
    assert prunable_images(inventory) == ["id2"]


@pytest.mark.parametrize("kind", ["remote", "exception", "ctrl-c", "sigterm"])
@pytest.mark.parametrize("what", ["image inventory", "prune images"])
def test_a_fault_while_pruning_images_leaves_the_new_release_live(
        tmp_path: Path, shipped_data: dict[str, Any], registry: RegistryServer,
        monkeypatch: pytest.MonkeyPatch, what: str, kind: str) -> None:
    """Image pruning runs after the release went live: whatever stops it (the link, a bug,
    Ctrl-C, SIGTERM) is a warning, and the run ends ok on the new release."""
    from tests.fake.host import Fault

    world = _world(tmp_path, shipped_data, registry, monkeypatch)
    world.config.remote.keep_releases = 1
    assert world.deploy("v1").result == "ok"
    assert world.deploy("v2").result == "ok"
    push(registry.server, (registry.username, registry.password), str(registry.ca),
         "vedfin/web", "v2", f"web v2, {what} {kind}")
    world.host.inject(Fault(what, 1, kind))
    result = world.deploy("v2")
    assert result.result == "ok", world.said
    assert any(f.fired for f in world.host.faults)
    state = listing(world.host, world.layout)  # type: ignore[arg-type]
    assert state.current == result.release and state.state(result.release) == "good"
    assert set(state.meta["images"].values()) == set(world.env_images().values())
    assert any(line.startswith("warning:") for line in world.said), world.said


def test_a_digest_set_by_hand_under_the_same_tag_is_replaced_by_a_redeploy(
        tmp_path: Path, shipped_data: dict[str, Any], registry: RegistryServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`docker service update --image repo:v1@<v2's digest>`: the tag is the release's, the
    image is not. The redeploy must see it and put the pinned digest back, not record it."""
    world = _world(tmp_path, shipped_data, registry, monkeypatch)
    assert world.deploy("v2").result == "ok"
    v2 = world.env_images()
    assert world.deploy("v1").result == "ok"
    v1 = world.env_images()
    api = next(name for name in v1 if "api" in name)
    by_hand = v1[api].split("@")[0] + "@" + v2[api].split("@")[1]  # api:v1@<v2's digest>
    engine = world.host.engine()
    changed = engine["services"][api]  # the stack label keeps the pinned v1
    changed["image"], changed["template"] = by_hand, "by-hand"
    changed["tasks"] = [{**task, "image": by_hand} for task in changed["tasks"]]
    world.host.set_engine(services=engine["services"])
    assert world.deploy("v1").result == "ok"
    assert world.env_images() == v1
    assert world.deploy("v1").result == "noop"
