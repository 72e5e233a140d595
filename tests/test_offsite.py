"""Off-host backup copies (`backups.s3`): the config refuses what cannot work, naming the key;
the endpoint's secret parts are filled in and never shown; the bucket's retention; the
sandbox never points at the shipped R2; and the deploy's upload step under every fault of
tests/test_orchestration.py (against the scripted host; the real upload and restore run against
the sandbox's S3 server in tests/integration/test_backup_sandbox.py)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from vedfin_ops.config.model import BackupS3, Config
from vedfin_ops.errors import CheckFailed, ConfigError
from vedfin_ops.steps import offsite
from vedfin_ops.steps.offsite import Bucket, endpoint_url, prune

from . import test_orchestration as orchestration
from .test_orchestration import World, assert_back_on_v1

v1_live, world = orchestration.v1_live, orchestration.world

R2 = {"endpoint": "https://${R2_ACCOUNT_ID}.r2.cloudflarestorage.com",
      "bucket": "v-edfinance-backup", "accessKeyId": "${BACKUP_S3_ACCESS_KEY_ID}",
      "secretAccessKey": "${BACKUP_S3_SECRET_ACCESS_KEY}"}


def _with_s3(data: dict[str, Any], **changes: Any) -> None:
    s3 = {**R2, **changes}
    data.setdefault("backups", {})["s3"] = {k: v for k, v in s3.items() if v is not None}


@pytest.mark.parametrize(("changes", "key"), [
    ({"accessKeyId": "AKIAREALKEYINTHEFILE"}, "backups.s3.accessKeyId"),
    ({"secretAccessKey": "${NOT_DECLARED}"}, "backups.s3.secretAccessKey"),
    ({"endpoint": "ftp://example.invalid"}, "backups.s3.endpoint"),
    ({"endpoint": "https://${UNKNOWN_ACCOUNT}.r2.cloudflarestorage.com"}, "backups.s3.endpoint"),
    ({"bucket": "Bad_Bucket"}, "backups.s3.bucket"),
    ({"prefix": "/absolute/"}, "backups.s3.prefix"),
    ({"prefix": "no-slash"}, "backups.s3.prefix"),
    ({"keep": 0}, "backups.s3.keep"),
    ({"bucket": None}, "backups.s3.bucket"),
])
def test_bad_s3_settings_name_the_key_and_never_echo_a_key(
        variant: Callable[[Callable[[dict[str, Any]], Any]], Config], changes: dict[str, Any],
        key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        variant(lambda d: _with_s3(d, **changes))
    message = str(caught.value)
    assert key in message, message
    assert "AKIAREALKEYINTHEFILE" not in message and "\n" not in message


def test_the_shipped_config_copies_to_the_runbook_s_r2_bucket() -> None:
    from vedfin_ops import load_config

    from .conftest import SHIPPED

    s3 = load_config(SHIPPED).backups.s3
    assert s3 is not None and s3.bucket == "v-edfinance-backup" and s3.region == "auto"
    assert s3.secret_refs() == {"accessKeyId": "BACKUP_S3_ACCESS_KEY_ID",
                                "secretAccessKey": "BACKUP_S3_SECRET_ACCESS_KEY",
                                "endpoint ${R2_ACCOUNT_ID}": "R2_ACCOUNT_ID"}


def test_the_endpoint_s_secret_parts_are_filled_in_or_named_when_missing() -> None:
    settings = BackupS3.model_validate(R2)
    assert endpoint_url(settings, {"R2_ACCOUNT_ID": "abc123"}) == \
        "https://abc123.r2.cloudflarestorage.com"
    with pytest.raises(CheckFailed, match=r"backups.s3.endpoint: \$\{R2_ACCOUNT_ID\} is not set"):
        endpoint_url(settings, {})


def test_a_missing_key_is_named_before_any_request(
        variant: Callable[[Callable[[dict[str, Any]], Any]], Config]) -> None:
    config = variant(_with_s3)
    with pytest.raises(CheckFailed, match=r"backups.s3.secretAccessKey: "
                                          r"\$\{BACKUP_S3_SECRET_ACCESS_KEY\} is not set"):
        offsite.bucket(config, {"BACKUP_S3_ACCESS_KEY_ID": "id", "R2_ACCOUNT_ID": "a"})


class _Deletes:
    def __init__(self) -> None:
        self.deleted: list[str] = []

    def delete_object(self, Bucket: str, Key: str) -> None:
        self.deleted.append(Key)


def test_the_bucket_keeps_the_newest_copies_and_never_the_one_just_made() -> None:
    settings = BackupS3.model_validate({**R2, "keep": 2, "prefix": "vedfin/"})
    client = _Deletes()
    target = Bucket(settings, client)
    ids = ["20261101T000000Z", "20261102T000000Z", "20261103T000000Z", "20261104T000000Z"]
    assert prune(target, "db", ids, protect="20261104T000000Z") == ids[:2]
    assert client.deleted == ["vedfin/db/20261101T000000Z.json",
                              "vedfin/db/20261101T000000Z.dump",
                              "vedfin/db/20261102T000000Z.json",
                              "vedfin/db/20261102T000000Z.dump"]  # records first
    # a copy made by a clock running behind is still kept
    assert prune(target, "db", ids, protect="20261101T000000Z") == ids[1:2]
    assert prune(target, "db", ids[:2], protect="x") == []


def test_what_the_endpoint_said_is_one_line() -> None:
    refused = Exception("403")
    refused.response = {"Error": {"Code": "SignatureDoesNotMatch",  # type: ignore[attr-defined]
                                  "Message": "The request signature\nwe calculated [bold]"}}
    assert offsite.said(refused) == \
        "SignatureDoesNotMatch: The request signature we calculated [bold]"
    assert offsite.said(OSError("Connection\nrefused")) == "OSError: Connection refused"


def test_the_sandbox_never_points_at_the_shipped_r2(shipped_data: dict[str, Any]) -> None:
    from vedfin_ops.sandbox.overlay import sandbox_config

    data = copy.deepcopy(shipped_data)
    _with_s3(data)
    registry = {"server": "127.0.0.1:15443", "username": "u", "password": "${REGISTRY_PASSWORD}"}
    local = sandbox_config(data, edge_port=18080, base_dir="/srv/x", user="u",
                           registry=registry, s3_endpoint="http://127.0.0.1:29000")
    assert local["backups"]["s3"]["endpoint"] == "http://127.0.0.1:29000"
    without = sandbox_config(data, edge_port=18080, base_dir="/srv/x", user="u",
                             registry=registry)
    assert "s3" not in without["backups"]


# -- the deploy's upload step under faults ---------------------------------------------------

def _s3_world(world: World) -> World:
    """The world's config with a bucket on a closed loopback port (nothing is listening)."""
    import yaml

    from vedfin_ops.config.loader import config_from_dict

    from .conftest import SHIPPED

    data = yaml.safe_load(SHIPPED.read_text())
    data.setdefault("remote", {})["baseDir"] = world.config.remote.base_dir
    _with_s3(data, endpoint="http://127.0.0.1:9")
    world.config = config_from_dict(data, "dokploy.yaml")
    return world


@pytest.mark.parametrize("kind", ["remote", "exception"])
def test_a_failed_off_host_copy_warns_and_the_deploy_goes_on(world: World, kind: str) -> None:
    from .fake.host import Fault

    _s3_world(world)
    world.host.inject(Fault("read file", 1, kind))
    result = world.deploy("v2")
    assert result.result == "ok"
    assert set(world.env_images().values()) == {"vedfinance/api:v2", "vedfinance/web:v2"}
    warned = [m for m in world.said if m.startswith("warning: backup ")]
    assert warned and "is whole on the host, but its off-host copy failed" in warned[0]
    assert world.audit()[-1]["detail"].endswith("(not copied off-host)")


@pytest.mark.parametrize("kind", ["ctrl-c", "sigterm", "sighup"])
def test_an_interrupt_during_the_off_host_copy_ends_on_v1(world: World, kind: str) -> None:
    from vedfin_ops.steps.operation import RunFailed

    from .fake.host import Fault

    _s3_world(world)
    world.host.inject(Fault("read file", 1, kind))
    with pytest.raises(RunFailed) as caught:
        world.deploy("v2")
    assert_back_on_v1(world, caught.value, "interrupted")
