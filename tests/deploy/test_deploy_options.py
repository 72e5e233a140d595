"""A deploy's options as one value (`DeployOptions`), `deploy --env E` for any env the config
names, and the config keys that say which env plays production's part
(`environments.<env>.ownsShared`, `environments.<env>.protected`)."""

from __future__ import annotations

import copy
import dataclasses
import inspect
from pathlib import Path
from typing import Any

import pytest
import yaml
from invoke.exceptions import Exit

from tests.deploy import test_orchestration as orchestration
from tests.deploy.test_orchestration import World
from vedfin_ops.config import roles
from vedfin_ops.config.loader import config_from_dict
from vedfin_ops.config.model import Config
from vedfin_ops.config.names import stack_name
from vedfin_ops.deploy.options import SAFE, DeployOptions
from vedfin_ops.deploy.pipeline import DeployResult, deploy
from vedfin_ops.errors import ConfigError, UsageError
from vedfin_ops.run.operation import RunFailed

v1_live, world = orchestration.v1_live, orchestration.world  # the scripted host, v1 live

QA_APPS = {"vedfin-qa_api-qa": "vedfinance/api:v1", "vedfin-qa_web-qa": "vedfinance/web:v1"}


def with_qa(data: dict[str, Any], **envs: dict[str, Any]) -> dict[str, Any]:
    """The config with a fourth env, qa (dev's apps and secrets under qa's names), and
    `envs`' keys added to those envs' sections."""
    data = copy.deepcopy(data)
    data["environments"]["qa"] = {"database": "vedfinance_qa"}
    for app in [a for a in data["applications"] if a["name"].endswith("-dev")]:
        data["applications"].append({**app, "name": app["name"].replace("-dev", "-qa"),
                                     "domain": app["domain"].replace("dev.", "qa.")})
    data["secrets"]["qa"] = dict(data["secrets"]["dev"])
    for env, keys in envs.items():
        data["environments"][env].update(keys)
    return data


def qa_world(world: World, data: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Config:
    config = config_from_dict(data, "dokploy.yaml")
    for name in config.secret_names("qa"):
        monkeypatch.setenv(name, f"s3cret-value-{name.lower()}")
    return config


def deploy_qa(world: World, config: Config, options: DeployOptions = SAFE) -> DeployResult:
    return deploy(world.host, config, "qa", "v1", options, say=world.said.append,
                  hooks=world.hooks(), clock=world.clock.clock())


# -- DeployOptions ------------------------------------------------------------------------------

def test_deploy_takes_its_options_as_one_value() -> None:
    assert list(inspect.signature(deploy).parameters) == [
        "conn", "config", "env", "tag", "options", "say", "show", "hooks", "clock"]
    assert [f.name for f in dataclasses.fields(DeployOptions)] == [
        "skip_preflight", "force", "allow_shared", "no_backup", "full_replicas", "build",
        "require_zero_downtime"]
    assert DeployOptions() == SAFE and not any(dataclasses.astuple(SAFE))
    with pytest.raises(dataclasses.FrozenInstanceError):
        SAFE.force = True  # type: ignore[misc]


def test_skip_preflight_and_force_reach_the_record_and_the_gate(world: World) -> None:
    seen: dict[str, Any] = {}
    hooks = world.hooks()
    passed = hooks.preflight

    def preflight(*args: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        return passed(*args, **kwargs)

    hooks.preflight = preflight
    deploy(world.host, world.config, "production", "v2", DeployOptions(force=True),
           say=world.said.append, hooks=hooks, clock=world.clock.clock())
    assert seen["force"] is True
    result = deploy(world.host, world.config, "production", "v3",
                    DeployOptions(skip_preflight=True), say=world.said.append, hooks=hooks,
                    clock=world.clock.clock())
    assert result.result == "ok"
    assert any(e["action"] == "preflight" and e["result"] == "skipped" for e in world.audit())


# -- deploy --env E -----------------------------------------------------------------------------

def test_a_fourth_env_deploys_through_the_same_pipeline(
        world: World, v1_live: tuple[Path, dict[str, Any]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """qa's first deploy adds its database to the shared stack, which production owns: refused
    without --allow-shared, then deployed with it."""
    config = qa_world(world, with_qa(v1_live[1]), monkeypatch)
    with pytest.raises(RunFailed, match=r"would change the shared stack \(postgres, redis, "
                                        r"edge\) that production also runs; deploy production "
                                        r"first, or pass --allow-shared"):
        deploy_qa(world, config)
    assert deploy_qa(world, config, DeployOptions(allow_shared=True)).result == "ok"
    assert world.host.images(stack_name(config, "qa")) == QA_APPS


def _cli_config(tmp_path: Path, data: dict[str, Any]) -> str:
    path = tmp_path / "dokploy.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def test_deploy_env_hands_the_pipeline_the_env_the_tag_and_the_options(
        tmp_path: Path, shipped_data: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from vedfin_ops.cli import target as cli_options
    from vedfin_ops.cli import tasks as tree
    from vedfin_ops.deploy import pipeline

    calls: list[tuple[Any, ...]] = []

    def recorded(host: Any, config: Config, env: str, tag: str | None,
                 options: DeployOptions, **kwargs: Any) -> DeployResult:
        calls.append((host, env, tag, options))
        return DeployResult(env, tag or "latest", "r1", "ok", "r1 live")

    host = object()
    monkeypatch.setattr(pipeline, "deploy", recorded)
    monkeypatch.setattr(cli_options, "remote", lambda *args, **kwargs: host)
    monkeypatch.setattr(tree, "stdout", type("Out", (), {"print": staticmethod(print)}))
    config = _cli_config(tmp_path, with_qa(shipped_data))
    tree.ns["deploy"].body(None, env="qa", tag="v3", force=True, no_backup=True, config=config)
    tree.ns["deploy.production"].body(None, skip_preflight=True, config=config)
    assert calls == [(host, "qa", "v3", DeployOptions(force=True, no_backup=True)),
                     (host, "production", None, DeployOptions(skip_preflight=True))]
    assert capsys.readouterr().out.splitlines() == ["deploy --env qa: ok: r1 live",
                                                    "deploy.production: ok: r1 live"]


def test_deploy_env_of_an_env_the_config_does_not_name_reaches_no_host(
        tmp_path: Path, shipped_data: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from vedfin_ops.cli import target as cli_options
    from vedfin_ops.cli import tasks as tree

    def no_host(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a host was reached")

    monkeypatch.setattr(cli_options, "remote", no_host)
    config = _cli_config(tmp_path, shipped_data)
    with pytest.raises(Exit) as refused:
        tree.ns["deploy"].body(None, env="qa", config=config)
    assert refused.value.code == 2
    assert str(refused.value.message) == (f'error: {config}: environments: unknown env "qa" '
                                          f"(known: dev, staging, production)")


# -- environments.<env>.ownsShared ------------------------------------------------------------

def test_the_env_named_production_has_both_roles_unless_the_config_says(
        variant: Any) -> None:
    shipped = variant(lambda data: None)
    assert [e for e in shipped.environments if roles.owns_shared(shipped, e)] == ["production"]
    assert roles.shared_owner(shipped) == "production"
    assert roles.protected_envs(shipped) == ["production"]

    def moved(data: dict[str, Any]) -> None:
        data["environments"]["production"].update(ownsShared=False, protected=False)
        data["environments"]["staging"].update(ownsShared=True, protected=True)

    config = variant(moved)
    assert roles.shared_owner(config) == "staging"
    assert roles.protected_envs(config) == ["staging"]
    nobody = variant(lambda data: data["environments"]["production"].update(ownsShared=False))
    assert roles.shared_owner(nobody) is None


def test_the_roles_are_booleans(variant: Any) -> None:
    with pytest.raises(ConfigError, match=r"environments\.staging\.protected: \"yes\": input "
                                           r"should be a valid boolean"):
        variant(lambda data: data["environments"]["staging"].update(protected="yes"))


def test_two_owners_of_the_shared_stack_are_bad_input_before_any_host(
        world: World, v1_live: tuple[Path, dict[str, Any]], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from vedfin_ops.cli import tasks as tree

    data = with_qa(v1_live[1], qa={"ownsShared": True})
    config = qa_world(world, data, monkeypatch)
    with pytest.raises(UsageError) as refused:
        deploy_qa(world, config)
    assert str(refused.value) == ("dokploy.yaml: environments: ownsShared is true for "
                                  "production and qa; one env at most owns the shared stack "
                                  "(postgres, redis, edge); production owns it by default: "
                                  "set environments.production.ownsShared: false")
    assert world.host.commands == []
    with pytest.raises(Exit) as checked:
        tree.ns["check-config"].body(None, config=_cli_config(tmp_path, data))
    assert checked.value.code == 2 and "ownsShared is true for production and qa" in str(
        checked.value.message)


def test_the_env_that_owns_the_shared_stack_changes_it_and_the_others_wait(
        world: World, v1_live: tuple[Path, dict[str, Any]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    data = with_qa(v1_live[1], qa={"ownsShared": True}, production={"ownsShared": False})
    config = qa_world(world, data, monkeypatch)
    assert deploy_qa(world, config).result == "ok"  # its own: no --allow-shared
    assert any(s.startswith("shared stack: postgres, redis") for s in world.said)
    assert world.host.images(stack_name(config, "qa")) == QA_APPS
    Path(world.layout.shared_hash).write_text("something-else\n")
    with pytest.raises(RunFailed, match="that qa also runs; deploy qa first"):
        deploy(world.host, config, "production", "v2", say=world.said.append,
               hooks=world.hooks(), clock=world.clock.clock())


def test_with_no_owner_every_change_of_the_shared_stack_needs_allow_shared(
        world: World, v1_live: tuple[Path, dict[str, Any]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    data = with_qa(v1_live[1], production={"ownsShared": False})
    config = qa_world(world, data, monkeypatch)
    with pytest.raises(RunFailed, match=r"that no env owns \(environments\.<env>\.ownsShared\); "
                                        r"or pass --allow-shared"):
        deploy_qa(world, config)


# -- environments.<env>.protected -----------------------------------------------------------

def test_a_protected_env_is_guarded_as_production_was(variant: Any, world: World,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from vedfin_ops.backups.restore import run_restore
    from vedfin_ops.deploy.scale import scale
    from vedfin_ops.reports.capacity import recommendations

    def swapped(data: dict[str, Any]) -> None:
        data["remote"] = {"baseDir": world.config.remote.base_dir}
        data["environments"]["staging"]["protected"] = True
        data["environments"]["production"]["protected"] = False

    config = variant(swapped)
    with pytest.raises(UsageError, match="refusing to take staging below 1 replica"):
        scale(None, config, "staging", 0, action="pause")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match=r"db\.restore replaces staging's database"):
        run_restore(None, config, "staging", "20261129T120000Z")  # type: ignore[arg-type]
    recs = {r.action: r for r in recommendations(config)}
    assert recs["pause dev and production"].command == (
        "fab -H vps pause --env dev && fab -H vps pause --env production")
    assert "one replica off-hours" not in recs  # staging runs one replica of each app
    paused = scale(world.host, config, "production", 0, action="pause",
                   say=world.said.append, clock=world.clock.clock())
    assert set(paused.values()) == {0}
