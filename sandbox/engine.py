"""The Docker Engine and swarm of the sandbox: installed, started and joined only if needed.

An engine or swarm that was here before is never taken over unless the user says so
(`--use-existing`): a developer's own containers are not ours to disturb. What we started is
recorded so that `sandbox.down` stops exactly that.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from sandbox.local import SandboxError, alive, ok, run, terminate


@dataclass
class EngineState:
    started_dockerd: bool = False
    dockerd_pid: int | None = None
    created_swarm: bool = False


def engine_answers() -> bool:
    return shutil.which("docker") is not None and ok(["docker", "info", "--format", "{{.ID}}"])


def swarm_state() -> str:
    return run(["docker", "info", "--format", "{{.Swarm.LocalNodeState}}"]).stdout.strip()


def apt_install(*packages: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False,
                                timeout=900)
        if result.returncode != 0:
            raise SandboxError(f"{' '.join(cmd[:3])} failed: "
                               f"{result.stderr.strip()[-300:]}")


def ensure_engine(workdir: Path, use_existing: bool, log: Path) -> EngineState:
    state = EngineState()
    if engine_answers():
        if not use_existing and not _ours(workdir):
            raise SandboxError("a Docker Engine already runs here that the sandbox did "
                               "not start; pass --use-existing to use it")
    else:
        if shutil.which("dockerd") is None:
            apt_install("docker.io")
        state.dockerd_pid = _start_dockerd(log)
        state.started_dockerd = True
    node = swarm_state()
    if node == "inactive":
        run(["docker", "swarm", "init", "--advertise-addr", "127.0.0.1"])
        state.created_swarm = True
    elif node != "active":
        raise SandboxError(f"this engine's swarm is {node!r}; expected active")
    elif not (use_existing or state.started_dockerd or _ours(workdir)):
        raise SandboxError("this engine is already in a swarm the sandbox did not "
                           "create; pass --use-existing to use it")
    return state


def _ours(workdir: Path) -> bool:
    """The engine was started by an earlier `sandbox.up` from this folder."""
    pid_file = workdir / "dockerd.pid"
    if not pid_file.exists():
        return False
    try:
        return alive(int(pid_file.read_text()))
    except (ValueError, OSError):
        return False


def _start_dockerd(log: Path) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as handle:
        proc = subprocess.Popen(["dockerd"], stdout=handle, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    (log.parent / "dockerd.pid").write_text(str(proc.pid))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if engine_answers():
            return proc.pid
        if proc.poll() is not None:
            raise SandboxError(f"dockerd exited with {proc.returncode}; see {log}")
        time.sleep(0.5)
    raise SandboxError(f"dockerd did not answer within 60s; see {log}")


def stop_dockerd(workdir: Path) -> None:
    pid_file = workdir / "dockerd.pid"
    if not pid_file.exists():
        return
    with contextlib.suppress(ValueError):
        terminate(int(pid_file.read_text()), wait=30)
    pid_file.unlink(missing_ok=True)
