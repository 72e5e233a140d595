"""A scripted host for fault injection into the orchestration (never instead of the sandbox).

Every command the tool builds runs for real in `sh`, in a temporary folder that stands for the
server's disk (so quoting, the lock's mkdir, the symlink swap and the listing are the real
ones); `docker` in that shell is `tests/fake/docker.py`, a scripted engine. A fault is
injected at the n-th command with a given `what` (before it runs, or after it ran: the remote
half-succeeded), as any exception, a KeyboardInterrupt, or a real signal to this process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.fake import docker
from vedfin_ops.config.secret_store import masked
from vedfin_ops.remote.command import Command
from vedfin_ops.remote.host import RemoteError, heredoc, prepare


@dataclass
class Fault:
    what: str  # the step's `what` (prefix match)
    nth: int = 1  # the n-th command of that step
    kind: str = "remote"  # remote | exception | ctrl-c | sigterm | sighup
    after: bool = False  # the command ran on the host, then the link went
    fired: bool = False

    def raise_it(self) -> None:
        self.fired = True
        if self.kind == "remote":
            raise RemoteError(f"{self.what}: Socket is closed (injected)")
        if self.kind == "exception":
            raise ValueError(f"injected bug at {self.what}")
        if self.kind == "ctrl-c":
            raise KeyboardInterrupt
        sig = {"sigterm": signal.SIGTERM, "sighup": signal.SIGHUP}[self.kind]
        os.kill(os.getpid(), sig)  # the handler runs (and raises) before the next line
        if threading.current_thread() is not threading.main_thread():
            # in a step's thread, the handler ran in the main one: there it closed this
            # command's channel (`Host.cancel_running`), which this command now sees
            raise RemoteError(f"{self.what}: Socket is closed (cut by {self.kind})")


TOUCHED_MACHINE: list[str] = []  # commands that would have reached this machine's own files


class FakeHost:
    """Host's interface (run, put_tree, rename, redact, commands, secrets) over `sh`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = root / "bin"
        self.bin.mkdir(parents=True, exist_ok=True)
        docker.install(self.bin / "docker")
        # the user's crontab, kept in a file of the fake host (never this machine's cron)
        crontab = self.bin / "crontab"
        crontab.write_text(f"""#!/bin/sh
tab={root / 'crontab'}
case "$1" in
  -l) [ -f "$tab" ] || {{ echo "no crontab for $(id -un)" >&2; exit 1; }}; cat "$tab" ;;
  -) cat > "$tab.new" && mv "$tab.new" "$tab" ;;  # read whole, then installed, as crontab(1)
  *) echo "crontab: fake supports -l and -" >&2; exit 2 ;;
esac
""")
        crontab.chmod(0o755)
        # the host's wall clock for the off-hours window: a set time (`host-time`), else
        # midday, outside every shipped window, so no test depends on when the suite runs
        (self.bin / "date").write_text(f"""#!/bin/sh
if [ "$*" = "+%H:%M" ]; then cat {root / 'host-time'} 2>/dev/null || echo 12:00; exit 0; fi
exec /bin/date "$@"
""")
        (self.bin / "date").chmod(0o755)
        # never this machine's Netdata or sudo: a reload is recorded in the fake host's folder
        for name, script in {"netdatacli": f'echo "$@" >> {root / "netdata-reloads"}\n',
                             "sudo": 'echo "sudo: a password is required" >&2; exit 1\n'
                             }.items():
            (self.bin / name).write_text("#!/bin/sh\n" + script)
            (self.bin / name).chmod(0o755)
        # what the shell finds: this host's scripted programs first (a test may narrow it to
        # those and a folder of its own: tests/host/fake_vps.py)
        self.path = f"{self.bin}:/usr/bin:/bin"
        self.engine_file = root / "engine.json"
        if not self.engine_file.exists():
            self.engine_file.write_text(json.dumps({"services": {}, "clock": 0}))
        self.commands: list[str] = []
        self.command_lines: list[str] = []
        self.secrets: list[str] = []
        self.faults: list[Fault] = []
        self.counts: dict[str, int] = {}
        self.name = "fake@host"
        self.outputs: list[str] = []
        self.siblings: list[str] = []  # the other nodes a run reached
        self.unreachable: set[str] = set()  # nodes whose SSH link a test cuts

    # -- the Host interface ---------------------------------------------------------------
    def redact(self, text: str) -> str:
        return masked(text, self.secrets)

    def run(self, command: str | Command, *, what: str, stdin: str | None = None,
            check: bool = True, stream: Any = None, timeout: float | None = 600,
            secret_stdin: str | None = None) -> str:
        """As `Host.run`: `stdin` a here-document on the command line, `secret_stdin` (or a
        `Command`'s own) the process's stdin, a `Command`'s secrets masked in what comes back;
        `command_lines` keeps each command line as `ps` would show it."""
        self.commands.append(what)
        command, secret_stdin, redact = prepare(command, secret_stdin, self.redact)
        if "/etc/netdata" in command:  # a test config that forgot tests/conftest.NO_NETDATA
            TOUCHED_MACHINE.append(what)  # tests/conftest.py fails the test
            command = "echo 'refused: the machine's /etc/netdata' >&2; exit 97"
        if stdin is not None:
            command = heredoc(command, stdin)
        self.command_lines.append(command)
        fault = self._fault(what)
        if fault is not None and not fault.after:
            fault.raise_it()
        env = {"PATH": self.path, "FAKE_ENGINE": str(self.engine_file)}
        if "docker stack deploy" in command:
            self._stack_json(command)
        # no stdin of this process's (a pytest worker's is its link to the controller)
        feed: dict[str, Any] = ({"stdin": subprocess.DEVNULL} if secret_stdin is None
                                else {"input": secret_stdin})
        done: subprocess.CompletedProcess[str] = subprocess.run(
            ["sh", "-c", command], capture_output=True, text=True, env=env,
            check=False, timeout=60, **feed)
        if stream is not None:
            for line in (done.stdout + done.stderr).splitlines():
                stream(redact(line))
        self.outputs.append(done.stdout + done.stderr)
        if fault is not None:
            fault.raise_it()
        if check and done.returncode != 0:
            raise RemoteError(redact(f"{what} failed on {self.name} (exit "
                                     f"{done.returncode}): {done.stderr.strip()[-200:]}"),
                              done.stdout + done.stderr)
        return done.stdout

    def put_tree(self, remote_dir: str, files: dict[str, str], private: Callable[[str], bool]
                 ) -> None:
        self.commands.append("upload")
        if not Path(remote_dir).parent.is_dir():  # SFTP makes no missing parents either
            raise FileNotFoundError(2, "No such file")
        cut = min(1, len(files) - 1)  # after the first file; a lone file, before it
        for i, (rel, text) in enumerate(sorted(files.items())):
            fault = self._fault("upload") if i == cut else None
            if fault is not None:
                fault.raise_it()
            path = Path(remote_dir) / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            path.chmod(0o600 if private(rel) else 0o640)
            if rel.startswith("stacks/") and rel.endswith(".yml"):
                # the scripted engine reads JSON (it runs without site-packages)
                Path(f"{path}.json").write_text(json.dumps(yaml.safe_load(text)))

    def _stack_json(self, command: str) -> None:
        """The scripted engine reads JSON; a stack file copied on the host (`cp`) has none
        beside it yet: write it from the YAML, as put_tree does for uploads."""
        import shlex

        words = shlex.split(command.split("docker stack deploy", 1)[1].split("&&")[0])
        if "-c" in words:
            path = Path(words[words.index("-c") + 1])
            if path.is_file():
                Path(f"{path}.json").write_text(json.dumps(yaml.safe_load(path.read_text())))

    def rename(self, source: str, target: str) -> None:
        self.commands.append("rename")
        fault = self._fault("rename")
        if fault is not None and not fault.after:
            fault.raise_it()
        os.rename(source, target)
        if fault is not None:
            fault.raise_it()

    def open_read(self, path: str) -> Any:
        self.commands.append("read file")
        fault = self._fault("read file")
        if fault is not None:
            fault.raise_it()
        return open(path, "rb")

    def open_new(self, path: str, mode: int) -> Any:
        self.commands.append("write file")
        fault = self._fault("write file")
        if fault is not None:
            fault.raise_it()
        return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "wb")

    def close(self) -> None:
        pass

    def sibling(self, host: str) -> FakeHost:
        """A cluster's other node: this same scripted machine (its usage is this machine's
        /proc), or a link that fails when a test says so."""
        from vedfin_ops.remote.host import HostError

        self.siblings.append(host)
        if host in self.unreachable:
            raise HostError(f"cannot reach {host}: timed out")
        return self

    # -- for the tests ----------------------------------------------------------------------
    def set_time(self, hhmm: str) -> None:
        """The host's `date +%H:%M` from now on."""
        (self.root / "host-time").write_text(hhmm + "\n")

    def inject(self, *faults: Fault) -> None:
        """Faults count commands from now on."""
        self.faults, self.counts = list(faults), {}

    def _fault(self, what: str) -> Fault | None:
        self.counts[what] = self.counts.get(what, 0) + 1
        for fault in self.faults:
            if not fault.fired and what.startswith(fault.what) and \
                    self.counts[what] == fault.nth:
                return fault
        return None

    def engine(self) -> dict[str, Any]:
        state: dict[str, Any] = json.loads(self.engine_file.read_text())
        return state

    def set_engine(self, **changes: Any) -> None:
        state = self.engine()
        state.update(changes)
        self.engine_file.write_text(json.dumps(state))

    def images(self, stack: str) -> dict[str, str]:
        return {name: svc["image"] for name, svc in self.engine()["services"].items()
                if svc["stack"] == stack}
