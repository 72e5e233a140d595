"""Off-host backup copies (`backups.s3`): the config refuses what cannot work, naming the key;
the endpoint's secret parts are filled in and never shown; the bucket's retention; the
sandbox never points at the shipped R2; and the deploy's upload step under every fault of
tests/deploy/test_orchestration.py (against the scripted host; the real upload and restore
run against the sandbox's S3 server in tests/integration/test_backup_sandbox.py)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.deploy import test_orchestration as orchestration
from tests.deploy.test_orchestration import World
from vedfin_ops.backups import offsite
from vedfin_ops.backups.offsite import Bucket, endpoint_url, prune
from vedfin_ops.config.model import BackupS3, Config
from vedfin_ops.errors import CheckFailed, ConfigError

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
    ({"endpoint": "http://minio.internal:9000"}, "backups.s3.endpoint"),
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
    from tests.conftest import SHIPPED
    from vedfin_ops import load_config

    s3 = load_config(SHIPPED).backups.s3
    assert s3 is not None and s3.bucket == "v-edfinance-backup" and s3.region == "auto"
    assert s3.secret_refs() == {"accessKeyId": "BACKUP_S3_ACCESS_KEY_ID",
                                "secretAccessKey": "BACKUP_S3_SECRET_ACCESS_KEY",
                                "endpoint ${R2_ACCOUNT_ID}": "R2_ACCOUNT_ID"}


def test_a_plain_http_endpoint_needs_allow_http(
        variant: Callable[[Callable[[dict[str, Any]], Any]], Config]) -> None:
    with pytest.raises(ConfigError, match=r"backups.s3.endpoint: .*allowHttp: true"):
        variant(lambda d: _with_s3(d, endpoint="http://minio.internal:9000"))
    config = variant(lambda d: _with_s3(d, endpoint="http://127.0.0.1:9000", allowHttp=True))
    assert config.backups.s3 is not None and config.backups.s3.allow_http


def test_server_side_encryption_is_asked_for_except_where_every_object_is_encrypted() -> None:
    """R2 encrypts every object at rest and implements no SSE header; any other endpoint is
    asked for AES256 on each object."""
    r2 = BackupS3.model_validate(R2)
    other = BackupS3.model_validate({**R2, "endpoint": "https://s3.eu-west-1.amazonaws.com"})
    assert offsite.encryption(r2) == {}
    assert offsite.encryption(other) == {"ServerSideEncryption": "AES256"}
    refusing = BackupS3.model_validate({**R2, "endpoint": "https://minio.example:9000",
                                        "serverSideEncryption": "none"})
    assert offsite.encryption(refusing) == {}  # a store without a KMS refuses the header


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
    target = Bucket(settings, client, owner="vedfin")
    ids = ["20261101T000000Z", "20261102T000000Z", "20261103T000000Z", "20261104T000000Z"]
    assert prune(target, "db", ids, protect="20261104T000000Z") == ids[:2]
    assert client.deleted == ["vedfin/vedfin/db/20261101T000000Z.json",
                              "vedfin/vedfin/db/20261101T000000Z.dump",
                              "vedfin/vedfin/db/20261102T000000Z.json",
                              "vedfin/vedfin/db/20261102T000000Z.dump"]  # records first
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
    from sandbox.overlay import sandbox_config

    data = copy.deepcopy(shipped_data)
    _with_s3(data)
    registry = {"server": "127.0.0.1:15443", "username": "u", "password": "${REGISTRY_PASSWORD}"}
    local = sandbox_config(data, edge_port=18080, base_dir="/srv/x", user="u",
                           registry=registry, s3_endpoint="http://127.0.0.1:29000")
    assert local["backups"]["s3"]["endpoint"] == "http://127.0.0.1:29000"
    without = sandbox_config(data, edge_port=18080, base_dir="/srv/x", user="u",
                             registry=registry)
    assert "s3" not in without["backups"]


# -- the deploy's off-host copy under faults (moto's S3 server in this process) -----------

@pytest.fixture(scope="module")
def s3_endpoint() -> Any:
    """moto's S3 server on a free loopback port (the sandbox's S3, here without signature
    checks), with the bucket."""
    moto_server = pytest.importorskip("moto.server")
    import socket

    import boto3

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="k",
                 aws_secret_access_key="s").create_bucket(Bucket="v-edfinance-backup")
    yield endpoint
    server.stop()


def _s3_world(world: World, endpoint: str) -> World:
    import yaml

    from tests.conftest import NO_NETDATA, SHIPPED
    from vedfin_ops.config.loader import config_from_dict

    data = yaml.safe_load(SHIPPED.read_text())
    data.pop("registry", None)  # never ghcr.io: the default images, as tests/conftest.py's
    for app in data["applications"]:
        app.pop("image", None)
        app.pop("build", None)
    data.setdefault("remote", {})["baseDir"] = world.config.remote.base_dir
    data["monitoring"] = {**data.get("monitoring", {}), "netdataConfig": NO_NETDATA}
    import uuid

    # a folder of the bucket per test: copies made by another test's world are not this one's
    _with_s3(data, endpoint=endpoint, region="us-east-1", prefix=f"t{uuid.uuid4().hex}/",
             allowHttp=True)
    world.config = config_from_dict(data, "dokploy.yaml")
    return world


def _bucket_of(world: World) -> Bucket:
    from vedfin_ops.config import secret_store

    target = offsite.bucket(world.config, secret_store.resolve(world.config, "production"))
    assert target is not None
    return target


def test_a_deploy_copies_its_backup_off_host_once_the_release_is_live(
        world: World, s3_endpoint: str) -> None:
    import hashlib

    _s3_world(world, s3_endpoint)
    assert world.deploy("v2").result == "ok"
    taken = listing_meta(world)["backup"]
    commands = world.host.commands
    assert commands.index("promote release") < commands.index("read file")  # after, not before
    last = world.audit()[-1]
    assert (last["action"], last["result"]) == ("backup-copy", "ok") and taken in last["detail"]
    target = _bucket_of(world)
    body = target.client.get_object(Bucket=target.settings.bucket,
                                    Key=target.key("vedfinance_prod", taken, "dump"))["Body"]
    local = Path(world.config.remote.base_dir) / "backups" / "vedfinance_prod" / f"{taken}.dump"
    assert hashlib.sha256(body.read()).hexdigest() == \
        hashlib.sha256(local.read_bytes()).hexdigest()
    assert taken in offsite.copy_ids(target, "vedfinance_prod")


def listing_meta(world: World) -> dict[str, Any]:
    from vedfin_ops.run.env_run import listing

    return listing(world.host, world.layout).meta  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["remote", "exception"])
def test_a_failed_off_host_copy_warns_and_the_deploy_stands(world: World, s3_endpoint: str,
                                                            kind: str) -> None:
    from tests.fake.host import Fault

    _s3_world(world, s3_endpoint)
    world.host.inject(Fault("read file", 1, kind))
    assert world.deploy("v2").result == "ok"
    assert set(world.env_images().values()) == {"vedfinance/api:v2", "vedfinance/web:v2"}
    assert any(m.startswith("warning: backups not copied off-host") for m in world.said)
    last = world.audit()[-1]
    assert (last["action"], last["result"]) == ("backup-copy", "failed"), last
    assert world.audit()[-2]["result"] == "ok"  # the deploy's own line


@pytest.mark.parametrize("kind", ["ctrl-c", "sigterm", "sighup"])
def test_an_interrupt_during_the_off_host_copy_leaves_the_release_live(
        world: World, s3_endpoint: str, kind: str) -> None:
    from tests.fake.host import Fault

    _s3_world(world, s3_endpoint)
    world.host.inject(Fault("read file", 1, kind))
    assert world.deploy("v2").result == "ok"  # recorded before the copy began: it stands
    assert set(world.env_images().values()) == {"vedfinance/api:v2", "vedfinance/web:v2"}
    assert any("after the deploy was recorded; it stands" in m for m in world.said)
    assert not Path(world.layout.lock).exists()


def test_the_host_file_is_read_front_to_back_never_more_than_a_window_ahead() -> None:
    """paramiko's prefetch asks for a whole file at once; the reader asks for one window."""
    from vedfin_ops.remote.host import WindowedReader

    data = bytes(range(256)) * 4000  # 1,024,000 bytes
    asked: list[int] = []

    class Handle:
        def readv(self, blocks: list[tuple[int, int]]) -> Any:
            asked.append(sum(n for _, n in blocks))
            for at, n in blocks:
                yield data[at:at + n]

        def close(self) -> None:
            pass

    reader = WindowedReader(Handle(), len(data), window=100_000)  # type: ignore[arg-type]
    out = b""
    while chunk := reader.read(70_000):
        out += chunk
        assert len(reader.buffer) <= 100_000
    assert out == data and max(asked) <= 100_000 and sum(asked) == len(data)
    assert WindowedReader(Handle(), 0).read() == b""  # type: ignore[arg-type]


def test_each_copy_is_encrypted_at_rest_and_its_sha256_kept_on_the_host(
        world: World, s3_endpoint: str) -> None:
    _s3_world(world, s3_endpoint)
    assert world.deploy("v2").result == "ok"
    taken = listing_meta(world)["backup"]
    target = _bucket_of(world)
    head = target.client.head_object(Bucket=target.settings.bucket,
                                     Key=target.key("vedfinance_prod", taken, "dump"))
    assert head.get("ServerSideEncryption") == "AES256"
    ledger = Path(world.config.remote.base_dir) / "backups" / "offsite.sha256"
    host_record = Path(world.config.remote.base_dir) / "backups" / "vedfinance_prod" / \
        f"{taken}.json"
    import json

    sha = json.loads(host_record.read_text())["sha256"]
    assert f"{sha}  vedfinance_prod/{taken}.dump" in ledger.read_text().splitlines()


def test_a_copy_whose_record_and_dump_were_both_replaced_is_refused(
        world: World, s3_endpoint: str) -> None:
    """Whoever can write to the bucket can replace a dump and its record together; the
    host's own record of what it copied says which sha256 the copy must have."""
    import hashlib
    import json

    from vedfin_ops.backups.restore import RestoreRun
    from vedfin_ops.run.operation import RunFailed

    _s3_world(world, s3_endpoint)
    assert world.deploy("v2").result == "ok"
    taken = listing_meta(world)["backup"]
    target = _bucket_of(world)
    s3, name = target.client, target.settings.bucket
    forged = b"PGDMP another database altogether\n"
    record = json.loads(s3.get_object(Bucket=name, Key=target.key(
        "vedfinance_prod", taken, "json"))["Body"].read())
    record |= {"sha256": hashlib.sha256(forged).hexdigest(), "size": len(forged)}
    s3.put_object(Bucket=name, Key=target.key("vedfinance_prod", taken, "dump"), Body=forged)
    s3.put_object(Bucket=name, Key=target.key("vedfinance_prod", taken, "json"),
                  Body=json.dumps(record).encode())
    folder = Path(world.config.remote.base_dir) / "backups" / "vedfinance_prod"
    for path in folder.glob(f"{taken}.*"):
        path.unlink()  # the host copy rotated out: the bucket's is the one to restore
    sql_before = list(world.host.engine().get("sql", []))
    with pytest.raises(RunFailed) as caught:
        RestoreRun(world.host, world.config, "production", taken,  # type: ignore[arg-type]
                   say=world.said.append, clock=world.clock.clock()).execute()
    message = str(caught.value)
    assert f"the copy of {taken} in s3://" in message and "this host copied" in message
    assert world.host.engine().get("sql", []) == sql_before
    assert not list(folder.glob(f"*{taken}*"))


def test_two_configs_on_one_bucket_prune_only_their_own_copies(
        world: World, s3_endpoint: str) -> None:
    """Two configs (stackPrefix vedfin and other) whose databases share a name, one bucket,
    one prefix: each one's retention counts and deletes only its own copies."""
    _s3_world(world, s3_endpoint)
    ours = _bucket_of(world)
    theirs = Bucket(ours.settings.model_copy(update={"keep": 1}), ours.client, owner="other")
    s3, name = ours.client, ours.settings.bucket
    ids = ["20261101T000000Z", "20261102T000000Z", "20261103T000000Z"]
    for target in (ours, theirs):
        for backup_id in ids:
            for ext in ("dump", "json"):
                s3.put_object(Bucket=name, Key=target.key("vedfinance_prod", backup_id, ext),
                              Body=b"{}")
    assert offsite.copy_ids(theirs, "vedfinance_prod") == ids
    assert prune(theirs, "vedfinance_prod", offsite.copy_ids(theirs, "vedfinance_prod"),
                 protect=ids[-1]) == ids[:2]
    assert offsite.copy_ids(ours, "vedfinance_prod") == ids  # untouched
    assert offsite.copy_ids(theirs, "vedfinance_prod") == ids[-1:]


def test_a_copy_made_before_copies_were_named_by_stack_prefix_is_still_restored(
        world: World, s3_endpoint: str) -> None:
    """An upgrade must not strand the bucket's older copies: `<prefix><database>/<id>` (the
    layout before per-config folders) is looked for when the config's own folder lacks it."""
    from vedfin_ops.backups.restore import RestoreRun

    _s3_world(world, s3_endpoint)
    assert world.deploy("v2").result == "ok"
    taken = listing_meta(world)["backup"]
    target = _bucket_of(world)
    s3, name = target.client, target.settings.bucket
    for ext in ("dump", "json"):
        key = target.key("vedfinance_prod", taken, ext)
        old = f"{target.settings.prefix}vedfinance_prod/{taken}.{ext}"
        s3.copy_object(Bucket=name, Key=old, CopySource={"Bucket": name, "Key": key})
        s3.delete_object(Bucket=name, Key=key)
    folder = Path(world.config.remote.base_dir) / "backups" / "vedfinance_prod"
    for path in folder.glob(f"{taken}.*"):
        path.unlink()  # only the bucket's older copy is left
    RestoreRun(world.host, world.config, "production", taken,  # type: ignore[arg-type]
               say=world.said.append, clock=world.clock.clock()).execute()
    assert any("the layout before copies were named by stackPrefix" in line
               for line in world.said)
    assert (folder / f"{taken}.dump").exists()
