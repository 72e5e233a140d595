"""A bare Debian 12 VPS on the scripted fake host, for host.prepare's orchestration tests.

The host's shell finds only the scripted system (tests/fake/debian.py) and a folder of plain
tools (cat, grep, awk, ...): no command can reach this machine's packages, users, swap or
firewall, and a command line that names one of this machine's own files fails the test.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.fake import debian
from tests.fake.host import FakeHost
from vedfin_ops.remote.command import Command
from vedfin_ops.remote.commands.host import Paths

TOOLS = ("sh", "cat", "grep", "sed", "awk", "cut", "tr", "head", "tail", "printf", "mkdir",
         "chmod", "mv", "rm", "cp", "touch", "mktemp", "readlink", "sha256sum", "timeout",
         "sleep", "seq", "env", "basename", "dirname", "cmp", "wc", "sort", "true", "false",
         "tee", "ls")
#: this machine's own files: a command naming one (not under the test's folder) is refused
MACHINE = re.compile(r"(?<![\w./-])/(etc|proc|swapfile|opt|home|root|var|srv)(/|\b)")
ADDRESS = "203.0.113.10"


def public_key(comment: str = "operator@laptop") -> str:
    blob = b"\x00\x00\x00\x0bssh-ed25519" + b"\x00\x00\x00\x20" + bytes(range(32))
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} {comment}"


class GuardedHost(FakeHost):
    """The fake host, refusing any command that names this machine's own files."""

    touched: list[str]

    def run(self, command: str | Command, **kwargs: Any) -> str:
        line = command.render() if isinstance(command, Command) else command
        found = MACHINE.search(line)
        if found:
            self.touched.append(f"{kwargs.get('what')}: {found.group(0)}")
            raise AssertionError(f"a command named this machine's {found.group(0)}: "
                                 f"{kwargs.get('what')}")
        return super().run(command, **kwargs)


class KumaHost(GuardedHost):
    """One that can forward a port (to a scripted Uptime Kuma)."""

    @contextmanager
    def forward(self, remote_port: int) -> Iterator[int]:
        yield 65000 + remote_port % 500


class FakeVps:
    def __init__(self, tmp: Path, *, kuma: bool = False, uid: int = 0, **state: Any) -> None:
        self.fs = tmp / "fs"
        self.paths = Paths.under(str(self.fs))
        for folder in ("etc/sysctl.d", "proc/sys/vm", "root", "opt", "home"):
            (self.fs / folder).mkdir(parents=True, exist_ok=True)
        (self.fs / "etc" / "os-release").write_text(
            'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\n'
            'VERSION_ID="12"\nID=debian\n')
        (self.fs / "etc" / "fstab").write_text("# <file system> <mount point> <type>\n"
                                               "UUID=abc / ext4 errors=remount-ro 0 1\n")
        (self.fs / "proc" / "sys" / "vm" / "swappiness").write_text("60\n")
        host_type = KumaHost if kuma else GuardedHost
        self.host = host_type(tmp / "host")
        self.host.touched = []
        (self.host.bin / "docker").unlink()  # comes with docker.io
        tools = tmp / "tools"
        tools.mkdir()
        for name in TOOLS:
            found = shutil.which(name)
            assert found, name
            (tools / name).symlink_to(found)
        self.host.path = f"{self.host.bin}:{tools}"
        self.state_file = tmp / "debian.json"
        self.netdata_config = str(self.fs / "netdata-etc")
        self.state_file.write_text(json.dumps({
            "bin": str(self.host.bin), "fs": str(self.fs), "uid": uid,
            "user": "root" if uid == 0 else "admin",
            "users": {"root": {"home": str(self.fs / "root"), "groups": ["root"],
                               "shadow": "*"},
                      "admin": {"home": str(self.fs / "home" / "admin"),
                                "groups": ["admin", "sudo"], "shadow": "$y$hash"}},
            "groups": {"root": 0, "admin": 1000, "sudo": 27},
            "packages": {}, "repo": ["docker.io", "ufw", "netdata", "cron", "curl", "sudo"],
            "services": {}, "netdata_config": self.netdata_config,
            "dropin": self.paths.netdata_dropin, "sudoers": self.paths.sudoers, **state}))
        for name in debian.BASE:
            debian.install(self.host.bin, self.state_file, name)

    def installed(self, *packages: str) -> None:
        """As if the distribution's packages were installed already (their units running)."""
        debian.applied(self.state_file, packages)

    def state(self) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(self.state_file.read_text())
        return found

    def set(self, **changes: Any) -> None:
        state = self.state()
        state.update(changes)
        self.state_file.write_text(json.dumps(state))

    def log(self) -> list[str]:
        return list(self.state().get("log", []))

    def config_change(self, data: dict[str, Any]) -> None:
        """The shipped config on this VPS: its base folder and Netdata's config under the
        test's folder, 64 MiB of swap, no Uptime Kuma."""
        data["remote"] = {**data.get("remote", {}), "baseDir": str(self.fs / "opt" / "vedfin")}
        data["monitoring"] = {**data.get("monitoring", {}),
                              "netdataConfig": self.netdata_config, "uptimeKumaPort": None}
        data["monitoring"].pop("uptimeKuma", None)
        data["vps"] = {**data["vps"], "swap": "64m", "address": ADDRESS}

    @property
    def base(self) -> Path:
        return self.fs / "opt" / "vedfin"

    def audit(self) -> list[dict[str, Any]]:
        path = self.base / "audit.log"
        return [json.loads(line) for line in path.read_text().splitlines()] \
            if path.exists() else []
