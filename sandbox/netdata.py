"""A real Netdata for the sandbox (Debian's `netdata`, 1.37): the one the runbook's Step 7
installs on the VPS, run here as the deploy user with its own folders and port, so the tool's
`monitoring.apply` writes its alarms and reloads them exactly as on a host where the deploy user
may edit Netdata's health configuration. The machine's own Netdata (if any) is never touched.

Only the collectors the alarms read run (proc for CPU and RAM, diskspace, and the tool's own
restarts plugin, found within 5 s of its install); the database is in memory; health runs every
5 s so a lowered threshold raises its alarm within seconds. Its `sendmail` (first on the PATH
Netdata gives alarm-notify.sh) is the sandbox's (`sink.sendmail_script`): the alerts' email goes
to the mail sink, never out.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path

from sandbox.local import (
    SandboxError,
    alive,
    port_answers,
    started_process,
    terminate,
    wait_ready,
)

BINARY = "netdata"
_CONF = """\
# Written by `inv sandbox.up`: the sandbox's own Netdata, run as {user}.
[global]
    run as user = {user}
    hostname = vedfin-sandbox
[directories]
    config = {root}/etc
    stock config = /usr/lib/netdata/conf.d
    log = {root}/log
    cache = {root}/cache
    lib = {root}/lib
    health config = {root}/etc/health.d
    stock health config = {root}/stock-health.d
    # the custom plugins folder is the built-in config folder's unless named here
    plugins = "/usr/lib/netdata/plugins.d" "{root}/etc/custom-plugins.d"
[web]
    bind to = 127.0.0.1:{port}
[db]
    mode = ram
[ml]
    enabled = no
[plugins]
    check for new plugins every = 5
    apps = no
    python.d = no
    charts.d = no
    go.d = no
    ebpf = no
    cups = no
    perf = no
    slabinfo = no
    nfacct = no
    fping = no
    ioping = no
    freeipmi = no
    statsd = no
    tc = no
    idlejitter = no
    timex = no
    cgroups = no
    proc = yes
    diskspace = yes
[health]
    enabled = yes
    run at least every seconds = 5
[environment variables]
    PATH = {root}/bin:/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin
"""


def available() -> bool:
    return shutil.which(BINARY) is not None and shutil.which("netdatacli") is not None


def _argv(root: Path) -> list[str]:
    return [shutil.which(BINARY) or BINARY, "-c", str(root / "etc" / "netdata.conf"), "-D"]


def running(root: Path) -> int | None:
    return started_process(root / "netdata.pid", _argv(root))


def ensure(root: Path, port: int, user: str, smtp_port: int | None = None) -> str:
    """Netdata up on 127.0.0.1:`port`, its email through the mail sink on `smtp_port`;
    returns its config folder (what `monitoring.netdataConfig` names). The stock alarms are
    left out: only the tool's are checked. A Netdata started with other settings (an older
    sandbox's) is started again."""
    from sandbox.sink import sendmail_script

    conf = _CONF.format(user=user, root=root, port=port)
    mailer = sendmail_script(smtp_port) if smtp_port else ""
    shim = root / "bin" / "sendmail"
    same = (root / "etc" / "netdata.conf").is_file() and \
        (root / "etc" / "netdata.conf").read_text() == conf and \
        (shim.read_text() if shim.is_file() else "") == mailer
    if running(root) is not None and same:
        return str(root / "etc")
    stop(root)
    if port_answers(port):  # two Netdatas would share it (SO_REUSEPORT)
        raise SandboxError(f"netdata: 127.0.0.1:{port} is already taken by another "
                           f"process (a Netdata left running? stop it first)")
    for sub in ("etc/health.d", "log", "cache", "lib", "stock-health.d", "bin"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "etc" / "netdata.conf").write_text(conf)
    shim.unlink(missing_ok=True)
    if mailer:
        shim.write_text(mailer)
        shim.chmod(0o755)
    account = pwd.getpwnam(user)
    for path in [root, *root.rglob("*")]:
        if path.name != "netdata.conf":
            shutil.chown(path, account.pw_uid, account.pw_gid)
    with (root / "out.log").open("ab") as log:
        # the PATH Netdata starts with is the one it gives alarm-notify.sh unless its
        # config names one (the config above does too)
        search = f"{root}/bin:{os.environ.get('PATH', '/usr/bin:/bin')}"
        proc = subprocess.Popen(_argv(root), stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                start_new_session=True, env={**os.environ, "PATH": search})
    (root / "netdata.pid").write_text(str(proc.pid))
    import requests

    def answers() -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{port}/api/v1/info", timeout=1).ok
        except requests.RequestException:
            return False

    wait_ready(proc, answers, name="netdata", log=root / "out.log", seconds=30)
    return str(root / "etc")


def stop(root: Path) -> None:
    """SIGTERM, then the whole process group killed: Netdata 1.37 can sit in its graceful
    shutdown for good (seen here: an instance that outlived its SIGTERM by 40 minutes kept
    answering on the same port, SO_REUSEPORT, beside its successor, with the old alarms)."""
    pid = running(root)
    if pid is not None:
        terminate(pid, wait=10.0)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if alive(pid) and os.getpgid(pid) == pid:  # still Netdata's group, not a reuse
                os.killpg(pid, signal.SIGKILL)  # its own session: its plugins go too
        deadline = time.monotonic() + 5
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
    (root / "netdata.pid").unlink(missing_ok=True)
