"""A real Uptime Kuma for the sandbox: npm's `uptime-kuma` (2.0.0-dev.0, the only version npm
has; its container image is out of reach here), installed by scripts/setup.sh, so the tool's
monitors are added to the server the runbook's Step 7 runs, through the same Socket.IO API.

It runs as the current user with its own SQLite data folder under the sandbox. Its update check
is sent to a dead proxy (no internet here: it would hang on it); 127.0.0.1 bypasses that proxy,
so its monitors and notifications still reach the sandbox's sites and webhook sink.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from sandbox.local import (
    SandboxError,
    port_answers,
    started_process,
    terminate,
    wait_ready,
)

INSTALL = Path(os.environ.get("VEDFIN_UPTIME_KUMA_DIR",
                              "/opt/vedfin-ops/uptime-kuma/node_modules/uptime-kuma"))
# Without it the server waits for its database wizard in the browser.
_DB_CONFIG = {"type": "sqlite", "client": "sqlite3"}
_DEAD_PROXY = "http://127.0.0.1:9"


def _patched() -> bool:
    """2.0.0-dev.0 looks up its db/patch-*.sql in db/old_migrations/ too, where it does not
    ship them: setup.sh copies them there; without them the first start fails migrating."""
    patches = list((INSTALL / "db").glob("patch-*.sql"))
    return bool(patches) and all((INSTALL / "db" / "old_migrations" / p.name).is_file()
                                 for p in patches)


def available() -> bool:
    return shutil.which("node") is not None and \
        (INSTALL / "server" / "server.js").is_file() and _patched()


def _argv(root: Path, port: int | None = None) -> list[str]:
    """The data folder first: it alone says which sandbox a server belongs to (`running`),
    whatever port it listens on."""
    argv = [shutil.which("node") or "node", str(INSTALL / "server" / "server.js"),
            f"--data-dir={root / 'data'}"]
    return argv if port is None else [*argv, f"--port={port}", "--host=127.0.0.1"]


def running(root: Path) -> int | None:
    return started_process(root / "kuma.pid", _argv(root))


def _start(root: Path, port: int) -> None:
    if port_answers(port):
        raise SandboxError(f"port {port} is taken by a process the sandbox did not start "
                           f"(Uptime Kuma needs it free)")
    data = root / "data"
    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    (data / "db-config.json").write_text(json.dumps(_DB_CONFIG))
    env = {key: value for key, value in os.environ.items()
           # its own variables win over some of the arguments (DATA_DIR over --data-dir)
           if key not in ("DATA_DIR", "UPTIME_KUMA_HOST", "UPTIME_KUMA_PORT", "HOST", "PORT")}
    env.update(http_proxy=_DEAD_PROXY, https_proxy=_DEAD_PROXY, HTTP_PROXY=_DEAD_PROXY,
               HTTPS_PROXY=_DEAD_PROXY, no_proxy="127.0.0.1,localhost",
               NO_PROXY="127.0.0.1,localhost")
    with (root / "out.log").open("ab") as log:
        proc = subprocess.Popen(_argv(root, port), cwd=INSTALL, env=env, stdout=log,
                                stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    (root / "kuma.pid").write_text(str(proc.pid))
    import requests

    def answers() -> bool:
        """Any answer: it listens only once its database is migrated."""
        try:
            requests.get(f"http://127.0.0.1:{port}/", timeout=1, allow_redirects=False)
        except requests.RequestException:
            return False
        return True

    # The first start creates and migrates the database: seconds, more on a busy machine.
    wait_ready(proc, answers, name="uptime kuma", log=root / "out.log", seconds=60)


def _account(url: str, username: str, password: str) -> bool:
    """The admin account made (a new database) or logged into; False if the database has
    another admin (left from another secrets file)."""
    from uptime_kuma_api import (
        Timeout,
        UptimeKumaException,
    )

    from vedfin_ops.monitoring.uptime_kuma import connect

    try:
        api = connect(url, 30)  # keeps this process's Ctrl-C handler
    except UptimeKumaException as exc:
        raise SandboxError(f"uptime kuma at {url}: {exc}") from None
    try:
        if api.need_setup():
            api.setup(username, password)  # refused if too weak: said below
        try:
            api.login(username, password)
        except Timeout:
            raise
        except UptimeKumaException:  # "Incorrect username or password."
            return False
        return True
    except UptimeKumaException as exc:
        raise SandboxError(f"uptime kuma at {url}: {exc}") from None
    finally:
        api.disconnect()


def ensure(root: Path, port: int, username: str, password: str) -> None:
    """Uptime Kuma up on 127.0.0.1:`port` with `username`/`password` as its admin. A data
    folder whose admin is someone else is wiped: it is the sandbox's, nothing in it matters."""
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    if started_process(root / "kuma.pid", _argv(root, port)) is None:
        stop(root)
        _start(root, port)
    url = f"http://127.0.0.1:{port}"
    if _account(url, username, password):
        return
    stop(root)
    shutil.rmtree(root / "data")
    _start(root, port)
    if not _account(url, username, password):
        raise SandboxError(f"uptime kuma: {username} cannot log in to a new database; "
                           f"see {root / 'out.log'}")


def stop(root: Path) -> None:
    pid = running(root)
    if pid is not None:
        terminate(pid, wait=10.0)
    (root / "kuma.pid").unlink(missing_ok=True)


IMAGE = "uptime-kuma:2"  # under the sandbox's repository, as images.INFRA names


def image_spec() -> Any:
    """`vedfin-sandbox/uptime-kuma:2`: the same npm install in the node:20 base, for the bare
    VPS, where `host.prepare` runs Uptime Kuma as Dokploy does (a container on 3001, data in a
    volume at /app/data). Its update check goes to a dead proxy, as here; with no
    db-config.json, the image writes SQLite's before the first start (2.0's wizard otherwise
    waits for a browser)."""
    from sandbox import images

    spec = images.node_spec(extra={"opt/uptime-kuma": INSTALL.parents[1]},
                            env=("DATA_DIR=/app/data/", f"http_proxy={_DEAD_PROXY}",
                                 f"https_proxy={_DEAD_PROXY}",
                                 "no_proxy=127.0.0.1,localhost"))
    start = ("mkdir -p /app/data && { test -f /app/data/db-config.json || echo "
             f"'{json.dumps(_DB_CONFIG)}' > /app/data/db-config.json; }} && "
             "exec node server/server.js --port=3001 --host=0.0.0.0")
    changes = tuple(c for c in spec.changes if not c.startswith("CMD"))
    return images.ImageSpec(f"{images.REPO}/{IMAGE}", spec.rootfs, (
        *changes, "WORKDIR /opt/uptime-kuma/node_modules/uptime-kuma",
        f"CMD {json.dumps(['/bin/sh', '-c', start])}"))
