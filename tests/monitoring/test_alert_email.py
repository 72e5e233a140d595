"""The runbook's email alerts (`alerts.email`), proven without the sandbox: Netdata's own
alarm-notify.sh (Debian's netdata package), given the notification files `monitoring.apply`
installs and the sandbox's `sendmail` (sandbox/sink.py), mails its test alarms for the
config's role to the configured address, and the mail sink records them. The sandbox's
Netdata raising a real alarm: tests/integration/test_monitoring_sandbox.py."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox import sink
from vedfin_ops.config.loader import config_from_dict
from vedfin_ops.monitoring import netdata

ALARM_NOTIFY = Path("/usr/lib/netdata/plugins.d/alarm-notify.sh")
STOCK = Path("/usr/lib/netdata/conf.d")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def mail_sink(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """The sandbox's sink process (webhooks and mail) on free loopback ports, in `tmp_path`."""
    http, smtp = _free_port(), _free_port()
    folder = tmp_path / "sink"
    folder.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "sandbox.sink", "--out",
                             str(folder / "received.jsonl"), "--port", str(http),
                             "--smtp-port", str(smtp)],
                            cwd=Path(__file__).parents[2])
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", smtp), 0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "no mail sink"
                time.sleep(0.1)
        yield folder, smtp
    finally:
        proc.terminate()
        proc.wait(10)


def _send(argv: list[str], message: bytes, smtp: int, folder: Path
          ) -> subprocess.CompletedProcess[bytes]:
    shim = folder / "sendmail"
    shim.write_text(sink.sendmail_script(smtp))
    shim.chmod(0o755)
    return subprocess.run([str(shim), *argv], input=message, capture_output=True, timeout=30,
                          check=False)


def test_the_sandbox_s_sendmail_delivers_to_the_mail_sink_as_sendmail_t_would(
        mail_sink: tuple[Path, int]) -> None:
    folder, smtp = mail_sink
    message = (b"To: ops@v-edfinance.com, Second <two@example.org>\r\nCc: three@example.org\r\n"
               b"Subject: vedfin ram is critical\r\n\r\n.a line starting with a dot\r\nend\r\n")
    done = _send(["-t", "-f", "netdata@vedfin"], message, smtp, folder)
    assert done.returncode == 0, done.stderr
    mail, = sink.mails(folder)
    assert mail["from"] == "netdata@vedfin" and mail["subject"] == "vedfin ram is critical"
    assert mail["to"] == ["ops@v-edfinance.com", "two@example.org", "three@example.org"]
    assert mail["message"] == message.decode()  # dot-stuffing undone, nothing else changed
    assert _send(["-F"], b"", smtp, folder).returncode != 0  # an option probe, no message
    assert len(sink.mails(folder)) == 1


def test_without_the_sink_the_sendmail_fails_as_a_temporary_failure(tmp_path: Path) -> None:
    done = _send(["-t"], b"To: a@example.org\r\n\r\nx\r\n", _free_port(), tmp_path)
    assert done.returncode == 75 and b"sendmail (sandbox):" in done.stderr


def _needs_netdata() -> None:
    if not ALARM_NOTIFY.is_file():
        if os.environ.get("VEDFIN_ALLOW_SKIP") == "1":
            pytest.skip("Debian's netdata is not installed")
        pytest.fail(f"{ALARM_NOTIFY}: not found (apt-get install netdata, as scripts/setup.sh "
                    f"does; VEDFIN_ALLOW_SKIP=1 to skip)")


def test_netdata_mails_the_config_s_alarms_to_alerts_email(
        tmp_path: Path, shipped_data: dict[str, Any], mail_sink: tuple[Path, int]) -> None:
    """Netdata's alarm-notify.sh reads its stock settings, then the tool's
    health_alarm_notify.conf, which reads the config's own settings for an alarm of its role:
    email on, to `alerts.email`. Its test alarms (warning, critical, clear) each arrive."""
    _needs_netdata()
    folder, smtp = mail_sink
    etc = tmp_path / "etc"
    data = {**shipped_data, "monitoring": {**shipped_data["monitoring"],
                                           "netdataConfig": str(etc)}}
    data["alerts"] = {k: v for k, v in data["alerts"].items() if k != "slack"}  # mail alone
    config = config_from_dict(data, "dokploy.yaml")
    for file in netdata.files(config, {}):
        (etc / file.rel).parent.mkdir(parents=True, exist_ok=True)
        (etc / file.rel).write_text(file.text)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sendmail").write_text(sink.sendmail_script(smtp))
    (bin_dir / "sendmail").chmod(0o755)
    for name in ("cache", "lib", "log"):
        (tmp_path / name).mkdir()
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path),
           "NETDATA_USER_CONFIG_DIR": str(etc), "NETDATA_STOCK_CONFIG_DIR": str(STOCK),
           "NETDATA_CACHE_DIR": str(tmp_path / "cache"), "NETDATA_LIB_DIR": str(tmp_path / "lib"),
           "NETDATA_LOG_DIR": str(tmp_path / "log"), "NETDATA_HOSTNAME": "vedfin-test"}
    role = f"vedfin-{config.remote.stack_prefix}"
    done = subprocess.run(["bash", str(ALARM_NOTIFY), "test", role], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    address = config.alerts.email
    assert address == "ops@v-edfinance.com"
    got = sink.mails(folder)
    assert [m["to"] for m in got] == [[address]] * 3, done.stderr
    severities = [next(line for line in m["message"].splitlines()
                       if line.startswith("X-Netdata-Severity:")) for m in got]
    assert severities == [f"X-Netdata-Severity: {s}" for s in ("warning", "critical", "clear")]
    assert all(f"X-Netdata-Role: {role}" in m["message"] for m in got)
