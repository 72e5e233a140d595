"""An S3 endpoint for the sandbox's off-host backup copies: moto's server (PyPI `moto[server]`).

No real S3 server is installable here (MinIO, Garage, SeaweedFS are in no registry this machine
reaches; Debian's radosgw needs a Ceph cluster). moto is the emulator botocore's own ecosystem
tests against: it speaks the S3 REST API with multipart uploads, and with
INITIAL_NO_AUTH_ACTION_COUNT it checks SigV4 signatures against IAM access keys, so a wrong
secret fails as R2 would (SignatureDoesNotMatch). The first three calls (no auth yet) make an
IAM user, its S3 policy and its access key; the keys go into the sandbox's secrets file as
BACKUP_S3_ACCESS_KEY_ID / BACKUP_S3_SECRET_ACCESS_KEY, the names the shipped config's
`backups.s3` uses.

Its state is in memory: a restarted server has an empty bucket and new keys.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sandbox.local import (
    SandboxError,
    port_answers,
    python_process,
    terminate,
    wait_ready,
)

BUCKET = "v-edfinance-backup"
REGION = "us-east-1"  # moto makes buckets without a location constraint only here
_SCRIPT = "from moto.server import main; main()"


def _argv(port: int) -> list[str]:
    return [sys.executable, "-c", _SCRIPT, "-H", "127.0.0.1", "-p", str(port)]


def available() -> bool:
    import importlib.util

    return importlib.util.find_spec("moto") is not None and \
        importlib.util.find_spec("flask") is not None


def running(folder: Path, port: int) -> int | None:
    return python_process(folder / "moto.pid", _argv(port)[1:])


def ensure(folder: Path, port: int) -> dict[str, str]:
    """The server up with the bucket; the access key it knows (made anew when the server was
    (re)started, kept in `keys.json`, 0600, for the next up)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    keys_file = folder / "keys.json"
    if running(folder, port) is not None and (folder / "ready").exists() and \
            keys_file.exists():
        known: dict[str, str] = json.loads(keys_file.read_text())
        return known
    stop(folder)
    if port_answers(port):
        raise SandboxError(f"port {port} is taken by a process the sandbox did not start "
                           f"(set state.json's s3_port to a free one, or stop it)")
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3", "MOTO_ALLOW_NONEXISTENT_REGION":
           "true"}
    with (folder / "moto.log").open("ab") as log:
        proc = subprocess.Popen(_argv(port), stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env)
    (folder / "moto.pid").write_text(str(proc.pid))
    (folder / "port").write_text(str(port))
    import requests

    endpoint = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            requests.get(f"{endpoint}/moto-api/", timeout=1)
        except requests.RequestException:
            return False
        return True

    wait_ready(proc, answers, name="moto server", log=folder / "moto.log", seconds=30)
    keys = _bootstrap(endpoint)
    fd = os.open(keys_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(keys, fh)
    (folder / "ready").write_text(endpoint)
    return keys


def _bootstrap(endpoint: str) -> dict[str, str]:
    import boto3

    iam = boto3.client("iam", endpoint_url=endpoint, region_name=REGION,
                       aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
    iam.create_user(UserName="vedfin-backups")
    iam.put_user_policy(UserName="vedfin-backups", PolicyName="backups", PolicyDocument=json.dumps(
        {"Version": "2012-10-17",
         "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
    key = iam.create_access_key(UserName="vedfin-backups")["AccessKey"]
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name=REGION,
                      aws_access_key_id=key["AccessKeyId"],
                      aws_secret_access_key=key["SecretAccessKey"])
    s3.create_bucket(Bucket=BUCKET)
    return {"BACKUP_S3_ACCESS_KEY_ID": key["AccessKeyId"],
            "BACKUP_S3_SECRET_ACCESS_KEY": key["SecretAccessKey"]}


def stop(folder: Path) -> None:
    """The server this sandbox started, known by its command line (a reused pid is never
    signalled)."""
    port_file = folder / "port"
    if port_file.exists():
        pid = running(folder, int(port_file.read_text()))
        if pid is not None:
            terminate(pid)
    for name in ("moto.pid", "ready", "port", "keys.json"):
        (folder / name).unlink(missing_ok=True)
