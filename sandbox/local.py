"""Running commands on this machine (the sandbox is local; a real VPS: remote/host.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TypeVar

from vedfin_ops.errors import VedfinError


class SandboxError(VedfinError):
    exit_code = 1


class JsonState:
    """A dataclass kept as `state.json` in a folder: what an `up` made, for its `down`. Keys
    a newer or older version wrote and this one does not know are ignored."""

    @classmethod
    def load(cls: type[_S], folder: Path) -> _S:
        path = folder / "state.json"
        if not path.exists():
            return cls()
        known = set(cls.__dataclass_fields__)  # type: ignore[attr-defined]
        return cls(**{k: v for k, v in json.loads(path.read_text()).items() if k in known})

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        data = asdict(self)  # type: ignore[call-overload]
        (folder / "state.json").write_text(json.dumps(data, indent=2) + "\n")


_S = TypeVar("_S", bound=JsonState)


def run(args: Sequence[str], *, check: bool = True, timeout: float = 300,
        stdin: bytes | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command without a shell; on failure say which command and what it printed."""
    try:
        result = subprocess.run(list(args), input=stdin, capture_output=True, timeout=timeout,
                                check=False, cwd=cwd)
    except FileNotFoundError:
        raise SandboxError(f"{args[0]}: not installed") from None
    except subprocess.TimeoutExpired:
        raise SandboxError(f"{' '.join(args[:3])}: no answer in {timeout:g}s") from None
    out = subprocess.CompletedProcess(result.args, result.returncode,
                                      result.stdout.decode(errors="replace"),
                                      result.stderr.decode(errors="replace"))
    if check and out.returncode != 0:
        detail = (out.stderr or out.stdout).strip().splitlines()
        raise SandboxError(f"{' '.join(args[:3])} failed: "
                           f"{detail[-1] if detail else 'exit ' + str(out.returncode)}")
    return out


def alive(pid: int) -> bool:
    """Running and not a zombie (a daemon started by this process stays one until reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def terminate(pid: int, wait: float = 5.0) -> None:
    """SIGTERM, then up to `wait` seconds for the process to go (the pid, not a pid file:
    sshd removes its file before it exits)."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + wait
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)


def wait_ready(proc: subprocess.Popen[bytes], ready: Callable[[], bool], *, name: str,
               log: Path, seconds: float) -> None:
    """Until `ready()` says yes: a daemon the sandbox started that exits first, or does not
    answer within `seconds`, is one line naming its log."""
    deadline = time.monotonic() + seconds
    while True:
        if proc.poll() is not None:
            raise SandboxError(f"{name} exited ({proc.returncode}); see {log}")
        if ready():
            return
        if time.monotonic() > deadline:
            raise SandboxError(f"{name} did not answer within {seconds:g} s; see {log}")
        time.sleep(0.2)


def started_process(pid_file: Path, argv: list[str]) -> int | None:
    """The pid in `pid_file` if that process still runs `argv` (after a reboot the pid in
    the file may be anyone's: never signal it on the number alone)."""
    try:
        pid = int(pid_file.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:len(argv)]
    except (OSError, ValueError):
        return None
    if not cmdline or [Path(cmdline[0].decode()).name, *(c.decode() for c in cmdline[1:])] \
            != [Path(argv[0]).name, *argv[1:]]:
        return None
    return pid if alive(pid) else None


def ok(args: Sequence[str], timeout: float = 30) -> bool:
    try:
        return run(args, check=False, timeout=timeout).returncode == 0
    except SandboxError:
        return False


def port_answers(port: int) -> bool:
    """Something accepts connections on 127.0.0.1:`port` (a daemon's own, or one the sandbox
    did not start and must not share the port with)."""
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def python_process(pid_file: Path, args: list[str]) -> int | None:
    """The pid in `pid_file` if it is a Python running `args` (after the interpreter),
    whichever name the interpreter ran under (`python`, `python3.11`: inv and pytest start it
    differently); a reused pid is never taken."""
    try:
        pid = int(pid_file.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except (OSError, ValueError):
        return None
    ours = "python" in Path(cmdline[0]).name and cmdline[1:1 + len(args)] == args
    return pid if ours and alive(pid) else None
