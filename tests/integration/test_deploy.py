"""Task 2.4 against the sandbox: a real sshd, a real swarm, a real postgres, real HTTP.

The tests run in file order and share the sandbox: each first puts the env on the version it
needs (a deploy of the live version is a no-op, so that costs nothing).
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.http_load import Load
from vedfin_ops import load_config
from vedfin_ops.config.secret_store import resolve
from vedfin_ops.deploy.db_init import db_init
from vedfin_ops.deploy.pipeline import deploy
from vedfin_ops.deploy.rollback import rollback
from vedfin_ops.errors import CheckFailed
from vedfin_ops.remote.host import Host, connect
from vedfin_ops.run.env_run import listing
from vedfin_ops.run.layout import Layout
from vedfin_ops.run.lock import LockHeld
from vedfin_ops.run.operation import RunFailed

from .conftest import ROOT, docker, fab, ssh_config_with_known_hosts

pytestmark = pytest.mark.integration

OUTPUTS: list[str] = []  # every line the tool printed in this module, for the secret scan


def _say(message: str) -> None:
    OUTPUTS.append(message)


def _show(lines: list[str]) -> None:
    OUTPUTS.extend(lines)


@pytest.fixture(scope="module")
def config(sandbox_up: dict[str, Any]) -> Any:
    return load_config(sandbox_up["config"])


@pytest.fixture
def host(sandbox_up: dict[str, Any]) -> Iterator[Host]:
    h = Host(connect("sandbox", sandbox_up["ssh_config"]))
    try:
        yield h
    finally:
        h.close()


def _deploy(sandbox_up: dict[str, Any], config: Any, tag: str) -> Any:
    h = Host(connect("sandbox", sandbox_up["ssh_config"]))
    try:
        return deploy(h, config, "production", tag, say=_say, show=_show)
    finally:
        h.close()


def _version(config: Any, app: str = "api") -> str:
    port = config.edge.http_port
    host = "api.v-edfinance.localhost" if app == "api" else "v-edfinance.localhost"
    return requests.get(f"http://127.0.0.1:{port}/version", headers={"Host": host},
                        timeout=5).text.strip()


def test_deploy_v1_then_v2_serves_v2_over_one_ssh_handshake(sandbox_up: dict[str, Any],
                                                           config: Any) -> None:
    _deploy(sandbox_up, config, "v1")
    assert _version(config) == "api v1"
    result = _deploy(sandbox_up, config, "v2")
    assert result.result == "ok" and result.handshakes == 1
    assert _version(config) == "api v2" and _version(config, "web") == "web v2"
    print(f"remote commands for one deploy: {len(result.commands)}: {result.commands}")


def test_redeploy_with_nothing_changed_is_a_noop(sandbox_up: dict[str, Any],
                                                 config: Any) -> None:
    _deploy(sandbox_up, config, "v2")
    result = _deploy(sandbox_up, config, "v2")
    assert result.result == "noop" and "nothing changed" in result.detail
    assert result.services_updated == []


def test_rollout_keeps_serving_under_load(sandbox_up: dict[str, Any], config: Any) -> None:
    _deploy(sandbox_up, config, "v1")
    with Load(config.edge.http_port) as load:
        time.sleep(1)
        result = _deploy(sandbox_up, config, "v2")
        time.sleep(1)
    assert result.result == "ok"
    assert load.sent >= 100, load.sent
    assert load.failed == [], f"{len(load.failed)} of {load.sent} failed: {load.failed[:5]}"
    assert {"api v1", "api v2"} <= load.versions
    # the deploy's own receipt says the same, measured through the same edge
    assert result.receipt["failed"] == 0 and result.receipt["sent"] >= 100, result.receipt


def test_broken_release_is_rolled_back_while_the_old_version_serves(
        sandbox_up: dict[str, Any], config: Any, host: Host) -> None:
    _deploy(sandbox_up, config, "v2")
    good = listing(host, Layout.of(config, "production")).current
    with Load(config.edge.http_port) as load, pytest.raises(CheckFailed) as info:
        _deploy(sandbox_up, config, "broken")
    assert "rollout failed, the engine rolled back" in str(info.value)
    assert load.failed == [], f"{len(load.failed)} of {load.sent} failed: {load.failed[:5]}"
    assert _version(config) == "api v2"
    after = listing(host, Layout.of(config, "production"))
    assert after.current == good
    assert after.releases[-1][1] == "failed"
    last = json.loads(host.run(f"tail -n 1 {config.remote.base_dir}/audit.log", what="t"))
    assert (last["result"], last["tag"], last["action"]) == ("failed", "broken", "deploy")


def test_failed_migration_stops_before_any_replica_changes(sandbox_up: dict[str, Any],
                                                           config: Any) -> None:
    _deploy(sandbox_up, config, "v2")
    before = docker("service", "inspect", "--format", "{{.Version.Index}}",
                    "vedfin-production_api-production").stdout
    with pytest.raises(CheckFailed, match=r"migrate .* failed.*no replica was changed"):
        _deploy(sandbox_up, config, "badmigration")
    after = docker("service", "inspect", "--format", "{{.Version.Index}}",
                   "vedfin-production_api-production").stdout
    assert before == after
    assert _version(config) == "api v2"


def test_a_second_deploy_fails_fast_naming_the_holder(sandbox_up: dict[str, Any],
                                                      config: Any, host: Host) -> None:
    _deploy(sandbox_up, config, "v2")
    first: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: first.update(r=_deploy(sandbox_up, config, "v1")))
    thread.start()
    lock = Layout.of(config, "production").lock
    deadline = time.monotonic() + 30
    while host.run(f"test -d {lock} && echo held || true", what="t").strip() != "held":
        assert time.monotonic() < deadline, "the first deploy never took the lock"
        time.sleep(0.1)
    second = Host(connect("sandbox", sandbox_up["ssh_config"]))
    with pytest.raises(LockHeld, match=r"production is locked by another run: root@.*deploy "
                                       r"production v1, pid \d+, since .*alive: heartbeat"):
        deploy(second, config, "production", "v2", say=_say, show=_show)
    assert second.commands == ["lock"]  # it gave up at once: no wait, no retry, no change
    second.close()
    thread.join(timeout=300)
    assert first["r"].result == "ok"
    assert _version(config) == "api v1"


def test_connection_cut_mid_upload_leaves_current_and_the_next_deploy_works(
        sandbox_up: dict[str, Any], config: Any, host: Host,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import paramiko
    _deploy(sandbox_up, config, "v1")
    layout = Layout.of(config, "production")
    before = listing(host, layout)
    cut = Host(connect("sandbox", sandbox_up["ssh_config"]))
    original_write = paramiko.SFTPFile.write
    writes = {"n": 0}

    def write_then_cut(self: Any, data: bytes) -> Any:
        writes["n"] += 1
        if writes["n"] == 4:  # the network goes away in the middle of the 4th file
            assert cut.conn.transport is not None
            cut.conn.transport.close()
        return original_write(self, data)

    monkeypatch.setattr(paramiko.SFTPFile, "write", write_then_cut)
    with pytest.raises(RunFailed) as info:
        deploy(cut, config, "production", "v2", say=_say, show=_show)
    assert "Socket is closed" in str(info.value) and "\n" not in str(info.value)
    monkeypatch.undo()
    after = listing(host, layout)
    assert after.current == before.current
    assert [r for r, _ in after.releases] == [r for r, _ in before.releases]
    assert _version(config) == "api v1"
    result = _deploy(sandbox_up, config, "v2")
    assert result.result == "ok" and _version(config) == "api v2"
    leftovers = host.run(f"ls -a {layout.releases} | grep -c '^.tmp-' || true", what="t")
    assert leftovers.strip() == "0"


def test_rollback_returns_to_the_previous_good_release(sandbox_up: dict[str, Any],
                                                       config: Any, host: Host) -> None:
    _deploy(sandbox_up, config, "v1")
    _deploy(sandbox_up, config, "v2")
    layout = Layout.of(config, "production")
    target = listing(host, layout).previous_good()
    assert rollback(host, config, "production", say=_say, show=_show) == target
    assert _version(config) == "api v1"
    assert listing(host, layout).current == target


@pytest.fixture
def shared_stack_live(sandbox_up: dict[str, Any], config: Any) -> None:
    """db-init needs postgres: a deploy brings the shared stack (a no-op when it is live)."""
    _deploy(sandbox_up, config, "v2")


@pytest.mark.usefixtures("shared_stack_live")
def test_db_init_twice_changes_nothing_the_second_time(config: Any, host: Host) -> None:
    db_init(host, config)
    again = db_init(host, config)
    assert not again.changed and again.vector_distance == 1.0


@pytest.mark.usefixtures("shared_stack_live")
def test_db_init_adds_extensions_to_a_database_made_without_them(config: Any,
                                                                 host: Host) -> None:
    from vedfin_ops.deploy.db_init import find_postgres
    container = find_postgres(host, config)
    host.run(f"docker exec -i {container} psql -U postgres -v ON_ERROR_STOP=1",
             what="t", stdin="DROP DATABASE IF EXISTS vedfinance_staging;"
                              "CREATE DATABASE vedfinance_staging;")
    result = db_init(host, config)
    assert "vedfinance_staging.vector" in result.created_extensions
    assert result.created_databases == []


@pytest.mark.usefixtures("shared_stack_live")
def test_db_init_names_the_image_when_an_extension_is_missing(sandbox_up: dict[str, Any],
                                                              shipped_data: Any,
                                                              host: Host) -> None:
    import yaml

    from vedfin_ops.config.loader import config_from_dict
    data = yaml.safe_load(Path(sandbox_up["config"]).read_text())
    data["postgres"]["extensions"] = ["vector", "postgis"]
    config = config_from_dict(data, sandbox_up["config"])
    with pytest.raises(CheckFailed, match=r"extension postgis is not available in "
                                          r"127\.0\.0\.1:\d+/vedfin-sandbox/postgres:pg17-pgvector"):
        db_init(host, config)


def _fab(sandbox_up: dict[str, Any], *args: str, ssh_config: Path | None = None
         ) -> subprocess.CompletedProcess[str]:
    """`fab` as a user runs it; its output joins the secret scan."""
    result = fab(sandbox_up, *args, ssh_config=ssh_config)
    OUTPUTS.extend([result.stdout, result.stderr])
    return result


def test_fab_deploy_production_exit_codes(sandbox_up: dict[str, Any], config: Any) -> None:
    tag = "v1" if _version(config) == "api v2" else "v2"
    ok = _fab(sandbox_up, "deploy.production", "--tag", tag)
    assert ok.returncode == 0, ok.stderr
    assert "deploy.production: ok" in ok.stdout
    noop = _fab(sandbox_up, "deploy.production", "--tag", tag)
    assert noop.returncode == 0 and "noop" in noop.stdout
    broken = _fab(sandbox_up, "deploy.production", "--tag", "broken")
    assert broken.returncode == 1
    assert broken.stderr.strip().splitlines()[-1].startswith(
        "error: deploy production failed: rollout failed")
    assert "Traceback" not in broken.stderr
    status = _fab(sandbox_up, "status", "--env", "production", "--json")
    info = json.loads(status.stdout)
    assert info["current"] and info["lock"] is None
    audit = _fab(sandbox_up, "audit", "--json")
    assert '"result": "failed"' in audit.stdout


def test_fab_refuses_an_unknown_host_key_until_told(sandbox_up: dict[str, Any],
                                                   tmp_path: Path) -> None:
    ssh_config = ssh_config_with_known_hosts(sandbox_up, tmp_path, "")
    refused = _fab(sandbox_up, "status", ssh_config=ssh_config)
    assert refused.returncode == 1
    assert "unknown host key" in refused.stderr and "--accept-new-host-key" in refused.stderr
    pinned = _fab(sandbox_up, "status", "--accept-new-host-key", ssh_config=ssh_config)
    assert pinned.returncode == 0, pinned.stderr
    assert _fab(sandbox_up, "status", ssh_config=ssh_config).returncode == 0


def test_lock_release_frees_a_stale_lock(sandbox_up: dict[str, Any], config: Any,
                                         host: Host) -> None:
    lock = Layout.of(config, "production").lock
    host.run(f"mkdir -p {lock} && echo '{{\"who\": \"ghost@laptop\"}}' > {lock}/holder",
             what="t")
    held = _fab(sandbox_up, "deploy.production", "--tag", "v2")
    assert held.returncode == 1 and "ghost@laptop" in held.stderr
    released = _fab(sandbox_up, "lock.release", "--env", "production")
    assert released.returncode == 0 and "ghost@laptop" in released.stdout
    again = _fab(sandbox_up, "deploy.production", "--tag", "v2")
    assert again.returncode == 0, again.stderr


def test_no_secret_value_in_any_output_log_or_audit_line(config: Any, host: Host) -> None:
    values = [v for v in resolve(config).values() if len(v) >= 8]
    assert values, "the sandbox has secrets to look for"
    audit_log = host.run(f"cat {config.remote.base_dir}/audit.log", what="t")
    layout = Layout.of(config, "production")
    public = host.run(f"cd {layout.current}/ && cat stacks/* db/* edge/* release.json",
                      what="t")
    haystack = "\n".join([*OUTPUTS, audit_log, public])
    assert len(OUTPUTS) > 20
    leaked = [v[:4] + "..." for v in values if v in haystack]
    assert leaked == []
    env_mode = host.run(f"stat -c %a {layout.current}/env/api-production.env", what="t")
    assert env_mode.strip() == "600"


def test_fab_logs_shows_each_task_s_lines_with_time_and_task(sandbox_up: dict[str, Any],
                                                             config: Any) -> None:
    """The runbook's "check logs": every replica's start line of both apps, merged in time
    order; one app, a pattern; bad input refused before connecting."""
    import re

    _deploy(sandbox_up, config, "v1")
    shown = _fab(sandbox_up, "logs", "--env", "production", "--since", "2h", "--lines", "50")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    tasks = {re.match(r"^\S+\s+(vedfin-production_(api|web)-production\.\d+\.\w+)@", line)
             .group(1) for line in lines if "listening on 3000" in line}  # type: ignore[union-attr]
    assert {t.split(".")[0] for t in tasks} == {"vedfin-production_api-production",
                                               "vedfin-production_web-production"}
    times = [line.split()[0] for line in lines]
    assert times == sorted(times)
    api = _fab(sandbox_up, "logs", "--env", "production", "--app", "api-production",
               "--grep", "^\\S+ \\S+api-production.*listening", "--since", "2h")
    assert api.returncode == 0 and api.stdout.strip()
    assert all("api-production" in line for line in api.stdout.splitlines())
    bad = _fab(sandbox_up, "logs", "--env", "production", "--app", "nope")
    assert bad.returncode == 2 and "has no app 'nope'" in bad.stderr


def test_fab_logs_follow_ends_on_ctrl_c_and_leaves_nothing_on_the_host(
        sandbox_up: dict[str, Any], config: Any) -> None:
    import os
    import shutil
    import signal

    env = {**os.environ, "VEDFIN_CONFIG": sandbox_up["config"]}
    follow = subprocess.Popen(
        [shutil.which("fab") or "fab", "-r", str(ROOT), "-S", str(sandbox_up["ssh_config"]),
         "-H", "sandbox", "logs", "--env", "production", "--since", "24h", "--follow"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert follow.stdout is not None
        first = follow.stdout.readline()  # a line arrives while it follows
        assert "listening on 3000" in first, first
        follow.send_signal(signal.SIGINT)
        follow.wait(timeout=15)
    finally:
        if follow.poll() is None:
            follow.kill()
    assert follow.returncode == 0, follow.stderr.read() if follow.stderr else ""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        left = subprocess.run(["pgrep", "-f", "docker service logs"], capture_output=True,
                              text=True).stdout.split()
        if not left:
            break
        time.sleep(0.5)
    assert not left, "followers left running on the host"
