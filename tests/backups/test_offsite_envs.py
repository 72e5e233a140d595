"""Off-host copies never block an env that does not need them (`backups.s3.envs`, default
`[production]`): with the shipped config, the secrets `inv secrets.generate --env dev` makes
are all a dev deploy asks for; production without the bucket's token is refused (exit 2) in
one line that says what the token is and how not to need it; the copy steps, `db.backups
--s3` and `db.restore --from s3:ID` leave the other envs alone."""

from __future__ import annotations

import copy
import os
import shutil
import stat
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.conftest import SHIPPED
from vedfin_ops.backups import offsite
from vedfin_ops.backups.records import Backup
from vedfin_ops.config import secret_store
from vedfin_ops.config.loader import config_from_dict, load_config
from vedfin_ops.config.model import Config
from vedfin_ops.errors import ConfigError, UsageError

TOKEN = ["BACKUP_S3_ACCESS_KEY_ID", "BACKUP_S3_SECRET_ACCESS_KEY"]


@pytest.fixture
def shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Config:
    """The shipped config as it is (its `backups.s3` included), read from a folder of its own
    so its secrets file is this test's; no secret in the environment."""
    for name in os.environ:
        if name.isupper() and ("SECRET" in name or "KEY" in name or "PASSWORD" in name
                               or name.startswith(("R2_", "BACKUP_", "UPTIME_", "SLACK_"))):
            monkeypatch.delenv(name)
    shutil.copy(SHIPPED, tmp_path / "dokploy.yaml")
    return load_config(tmp_path / "dokploy.yaml")


def _manual(config: Config, env: str, but: tuple[str, ...] = ()) -> dict[str, str]:
    """A value for each `manual` secret a deploy of `env` asks for, less `but`."""
    return {name: "x" * 16 for name, source in config.secret_names(env).items()
            if source == "manual" and name not in but}


def _generated(config: Config, env: str, monkeypatch: pytest.MonkeyPatch,
               but: tuple[str, ...] = ()) -> None:
    """What `inv secrets.generate --env ENV` leaves, plus the env's manual secrets (less
    `but`) exported, as a team would have them."""
    made = secret_store.generate(config, env)
    assert stat.S_IMODE(made.path.stat().st_mode) == 0o600
    for name, value in _manual(config, env, but).items():
        monkeypatch.setenv(name, value)


def test_the_shipped_config_copies_only_production_s_backups_off_host(shipped: Config
                                                                        ) -> None:
    assert shipped.backups.s3 is not None and shipped.backups.s3.envs == ["production"]
    assert [env for env in shipped.environments if shipped.backups.offsite(env)] == \
        ["production"]


def test_dev_deploys_with_the_secrets_generate_makes_and_no_bucket_token(shipped: Config
                                                                         ) -> None:
    """A new team's first command: `inv secrets.generate --env dev` leaves no bucket token to
    fill by hand, and with dev's own manual secrets (the registry's password, where the
    config has a registry) the deploy's secret check (and preflight's) finds nothing
    missing."""
    made = secret_store.generate(shipped, "dev")
    assert not {*TOKEN, "R2_ACCOUNT_ID"} & set(made.to_fill_by_hand)
    found = secret_store.resolve(shipped, "dev", environ=_manual(shipped, "dev"))
    assert secret_store.missing(shipped, "dev", found) == []
    assert not {*TOKEN, "R2_ACCOUNT_ID"} & set(shipped.secret_names("dev"))
    staging = shipped.secret_names("staging")
    assert not set(TOKEN) & set(staging) and "GEMINI_API_KEY" in staging  # its api's own


def test_the_dev_deploy_passes_its_secret_check(shipped: Config, monkeypatch: pytest.MonkeyPatch
                                                ) -> None:
    """The deploy itself, up to the first thing after the secret check (the image pins),
    which this test stops at: no host is ever reached."""
    from vedfin_ops.deploy import pipeline

    _generated(shipped, "dev", monkeypatch)
    reached = []

    def stop(*_args: Any, **_kwargs: Any) -> Any:
        reached.append(True)
        raise RuntimeError("past the secret check")

    monkeypatch.setattr(pipeline, "resolve_pins", stop)
    with pytest.raises(RuntimeError, match="past the secret check"):
        pipeline.deploy(None, shipped, "dev", "v1", say=lambda _m: None)  # type: ignore[arg-type]
    assert reached == [True]


def test_production_without_the_bucket_token_is_refused_saying_what_it_is(
        shipped: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    """Production's backups are the runbook's R2 backups: a production deploy whose dumps
    would live only on the VPS's disk is refused before any host, in one line naming the two
    secrets, what they are, and `backups.s3.envs`."""
    from vedfin_ops.deploy.pipeline import deploy

    _generated(shipped, "production", monkeypatch, but=tuple(TOKEN))
    found = secret_store.resolve(shipped, "production")
    assert secret_store.missing(shipped, "production", found) == TOKEN
    with pytest.raises(UsageError) as caught:
        deploy(None, shipped, "production", "v1")  # type: ignore[arg-type]
    message = str(caught.value)
    assert "\n" not in message and "secrets.production: not set:" in message
    assert all(name in message for name in TOKEN)
    assert "backups.s3's token for the off-host copies of production's backups" in message
    assert "leave production out of backups.s3.envs" in message


def _load(data: dict[str, Any]) -> Config:
    return config_from_dict(copy.deepcopy(data), "dokploy.yaml")


@pytest.fixture
def data() -> dict[str, Any]:
    import yaml

    loaded: dict[str, Any] = yaml.safe_load(SHIPPED.read_text())
    return loaded


def test_an_env_listed_needs_the_token_and_an_empty_list_needs_it_nowhere(
        data: dict[str, Any]) -> None:
    data["backups"]["s3"]["envs"] = ["production", "staging"]
    both = _load(data)
    assert set(TOKEN) <= set(both.secret_names("staging"))
    assert not set(TOKEN) & set(both.secret_names("dev"))
    data["backups"]["s3"]["envs"] = []
    none = _load(data)
    assert not any(none.backups.offsite(env) for env in none.environments)
    assert not set(TOKEN) & set(none.secret_names("production"))
    assert "R2_ACCOUNT_ID" in none.secret_names("production")  # its api still uses it
    assert set(TOKEN) <= set(none.secret_names())  # check-config still counts them


def test_a_secret_the_env_s_own_app_uses_stays_required(data: dict[str, Any]) -> None:
    dev_api = next(app for app in data["applications"] if app["name"] == "api-dev")
    dev_api["environment"].append("R2_ACCOUNT_ID=${R2_ACCOUNT_ID}")
    config = _load(data)
    assert "R2_ACCOUNT_ID" in config.secret_names("dev")
    assert not set(TOKEN) & set(config.secret_names("dev"))


def test_an_unknown_env_in_the_list_is_refused_naming_the_key(data: dict[str, Any]) -> None:
    data["backups"]["s3"]["envs"] = ["production", "qa"]
    with pytest.raises(ConfigError, match=r'backups.s3.envs\[1\]: "qa" is not an environment'):
        _load(data)


def _backup(env: str) -> Backup:
    return Backup("20261129T030000Z", f"vedfinance_{env}", env, 10, "0" * 64,
                  "2026-11-29T03:00:00+00:00", "cron", "nightly")


def test_a_dev_backup_is_not_copied_and_asks_for_no_bucket(shipped: Config) -> None:
    """`db.backup --env dev` and a dev deploy's after-live copy do nothing off-host: no host
    command, no S3 client, no secret asked for."""
    from vedfin_ops.deploy.pipeline import Deploy

    said: list[str] = []
    assert offsite.offsite_copy(None, shipped, _backup("dev"), said.append) is None  # type: ignore[arg-type]
    assert said == []
    Deploy.copy_offsite(SimpleNamespace(config=shipped, env="dev"))  # type: ignore[arg-type]


@pytest.mark.parametrize("env", ["dev", "staging"])
def test_reading_the_copies_of_an_env_not_copied_is_bad_input(shipped: Config, env: str
                                                                ) -> None:
    from vedfin_ops.backups.restore import run_restore

    host = SimpleNamespace(secrets=[])
    with pytest.raises(UsageError, match=rf"dokploy.yaml: backups.s3.envs: {env}'s backups "
                                         rf"are not copied off-host \(envs: production\)"):
        offsite.require_copied(shipped, env, "db.backups --s3")
    with pytest.raises(UsageError, match=r"backups.s3.envs"):
        run_restore(host, shipped, env, "s3:20261129T030000Z")  # type: ignore[arg-type]
    assert offsite.require_copied(shipped, None, "db.backups --s3") == ["production"]
    assert offsite.require_copied(shipped, "production", "db.backups --s3") == ["production"]


def test_no_env_copied_or_no_bucket_is_named(data: dict[str, Any]) -> None:
    data["backups"]["s3"]["envs"] = []
    with pytest.raises(UsageError, match=r"backups.s3.envs: no env's backups are copied off-host"):
        offsite.require_copied(_load(data), None, "db.backups --s3")
    del data["backups"]["s3"]
    with pytest.raises(UsageError, match=r"db.backups --s3 needs backups.s3 in the config"):
        offsite.require_copied(_load(data), None, "db.backups --s3")


def test_the_nightly_scripts_of_every_env_know_nothing_of_the_bucket(shipped: Config) -> None:
    """Cron has no S3 client: each env's nightly script is the same with or without
    `backups.s3` (the copies are the tool's), so an env outside the list loses nothing."""
    from vedfin_ops.schedule import nightly

    bare = shipped.model_copy(update={"backups": shipped.backups.model_copy(
        update={"s3": None})})
    for env in shipped.environments:
        assert nightly.script(shipped, env) == nightly.script(bare, env)
        assert "BACKUP_S3" not in nightly.script(shipped, env)
