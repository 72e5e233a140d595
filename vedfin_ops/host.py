"""The one place that touches SSH: open a checked connection, run, count handshakes.

Fabric's Connection accepts any host key it has never seen (AutoAddPolicy) and reads no
known_hosts file. A deploy tool must not: here the host key is checked against the
UserKnownHostsFile of the ssh_config entry (else ~/.ssh/known_hosts), and an unknown or changed
key stops the run unless the user explicitly accepts a new one.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from pathlib import Path
from typing import Any

import paramiko
from fabric import Config as FabricConfig
from fabric import Connection

from .errors import CheckFailed

HANDSHAKES = {"count": 0}


class HostError(CheckFailed):
    """The host could not be reached or trusted."""


def known_hosts_file(conn: Connection) -> Path:
    configured = conn.ssh_config.get("userknownhostsfile")
    if configured:
        return Path(os.path.expanduser(str(configured).split()[0]))
    return Path.home() / ".ssh" / "known_hosts"


def secure(conn: Connection, accept_new_host_key: bool = False) -> Connection:
    """Make `conn` check host keys (and optionally pin a new one) before it ever opens."""
    if getattr(conn, "_vedfin_secured", False):
        return conn
    if isinstance(conn.gateway, Connection):  # ProxyJump: the jump host is checked too
        secure(conn.gateway, accept_new_host_key)
    path = known_hosts_file(conn)
    client = conn.client
    # Remote commands never read the user's terminal: stdin is given explicitly or not at all.
    conn.config.run.in_stream = False
    if path.exists():
        client.load_host_keys(str(path))
    elif accept_new_host_key:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.touch(mode=0o600)
        client.load_host_keys(str(path))
    policy = paramiko.AutoAddPolicy() if accept_new_host_key else paramiko.RejectPolicy()
    client.set_missing_host_key_policy(policy)
    keepalive = int(conn.ssh_config.get("serveraliveinterval", 15) or 15)
    original_open = conn.open

    def checked_open() -> Any:
        if conn.is_connected:
            return None
        try:
            result = original_open()
        except paramiko.BadHostKeyException as exc:
            raise HostError(
                f"error: {_where(conn)}: the host key CHANGED (got "
                f"{exc.key.get_name()} {exc.key.fingerprint}, known_hosts {path} has another). "
                f"Someone may be intercepting the connection; if the server was rebuilt, "
                f"remove its old line from {path}.") from None
        except paramiko.SSHException as exc:
            if "not found in known_hosts" in str(exc):
                raise HostError(
                    f"error: {_where(conn)}: unknown host key (not in {path}); check it out of "
                    f"band, then pass --accept-new-host-key to pin it") from None
            if isinstance(exc, paramiko.AuthenticationException):
                raise HostError(f"error: {_where(conn)}: the server refused the key for user "
                                f"{conn.user}") from None
            raise HostError(f"error: {_where(conn)}: ssh: {exc}") from None
        except TimeoutError as exc:
            raise HostError(f"error: cannot reach {_where(conn)}: timed out ({exc})") from None
        except OSError as exc:
            raise HostError(f"error: cannot reach {_where(conn)}: {exc.strerror or exc}"
                            ) from None
        HANDSHAKES["count"] += 1
        if conn.transport is not None:
            conn.transport.set_keepalive(keepalive)
        if accept_new_host_key:
            client.save_host_keys(str(path))
        return result

    conn.open = checked_open
    conn._vedfin_secured = True
    return conn


def _where(conn: Connection) -> str:
    return f"{conn.user}@{conn.host}:{conn.port}"


def connect(host: str, ssh_config: str | os.PathLike[str] | None = None,
            accept_new_host_key: bool = False, connect_timeout: int = 15) -> Connection:
    """A checked Connection for library callers (`fab -H` builds its own; tasks secure it)."""
    config = FabricConfig(runtime_ssh_path=str(ssh_config)) if ssh_config else FabricConfig()
    if ssh_config:
        config.load_ssh_config()
    conn = Connection(host, config=config, connect_timeout=connect_timeout)
    return secure(conn, accept_new_host_key)


class RemoteError(CheckFailed):
    """A remote command failed: says which step and what the host printed (never a secret)."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output


def _telling_line(text: str) -> str:
    """The line of an error output worth one line: the last ERROR/error, else the last."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        if "ERROR" in line or "error" in line.lower():
            return line
    return lines[-1] if lines else "no output"


class Host:
    """One SSH connection for a whole run: every step's commands and uploads go through here.

    Counts handshakes and commands, so a benchmark (and a test) can say how much a deploy
    talks to the host.
    """

    def __init__(self, conn: Connection, accept_new_host_key: bool = False) -> None:
        self.conn = secure(conn, accept_new_host_key)
        self.commands: list[str] = []
        self.secrets: list[str] = []
        self._sftp: paramiko.SFTPClient | None = None
        self._track_channels()

    def redact(self, text: str) -> str:
        """Whatever the host printed, no secret value of this run leaves through us."""
        for value in sorted(self.secrets, key=len, reverse=True):
            if len(value) >= 4:
                text = text.replace(value, "***")
        return text

    @property
    def name(self) -> str:
        return _where(self.conn)

    def run(self, command: str, *, what: str, stdin: str | None = None, check: bool = True,
            stream: Any = None, timeout: float | None = 600) -> str:
        """Run one command; `what` names the step in an error. Output is returned, not shown,
        unless `stream` (a callable taking each line) is given."""
        self.commands.append(what)
        self.conn.open()
        kwargs: dict[str, Any] = {"hide": True, "warn": True, "timeout": timeout,
                                  "in_stream": False}
        if stdin is not None:
            # A here-document, not a stdin stream: a command that exits early (psql on the
            # first error) must not race a writer thread into "Socket is closed".
            command = heredoc(command, stdin)
        if stream is not None:
            kwargs["out_stream"] = _LineWriter(lambda line: stream(self.redact(line)))
            kwargs["err_stream"] = _LineWriter(lambda line: stream(self.redact(line)))
        try:
            result = self.conn.run(command, **kwargs)
        except Exception as exc:  # invoke's CommandTimedOut and transport errors
            text = str(exc).strip().splitlines()
            raise RemoteError(self.redact(f"error: {what}: {type(exc).__name__}: "
                                          f"{text[-1] if text else ''}")) from None
        if check and not result.ok:
            output = self.redact(f"{result.stdout}\n{result.stderr}")
            if "docker.sock" in output and "permission denied" in output.lower():
                raise RemoteError(f"error: {what}: user {self.conn.user} on {self.conn.host} "
                                  f"may not use Docker (add it to the docker group)", output)
            raise RemoteError(self.redact(
                f"error: {what} failed on {self.name} (exit {result.exited}): "
                f"{_telling_line(result.stderr or result.stdout)}"), output)
        return str(result.stdout)

    @property
    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None or self._sftp.get_channel() is None or \
                self._sftp.get_channel().closed:
            self.conn.open()
            self._sftp = self.conn.client.open_sftp()
        return self._sftp

    def put_tree(self, remote_dir: str, files: dict[str, str], private: Any) -> None:
        """Upload files under `remote_dir`; `private(path)` files are 0600 before any byte."""
        self.commands.append("upload")
        made: set[str] = set()
        for rel, text in sorted(files.items()):
            path = f"{remote_dir}/{rel}"
            parent = path.rsplit("/", 1)[0]
            if parent not in made:
                self._mkdirs(parent, remote_dir, made)
            handle = self.sftp.open(path, "w")
            try:
                handle.chmod(0o600 if private(rel) else 0o640)
                handle.write(text.encode())
            finally:
                handle.close()

    def _mkdirs(self, path: str, root: str, made: set[str]) -> None:
        parts = path[len(root):].strip("/").split("/") if path != root else []
        current = root
        for part in ["", *parts]:
            current = f"{current}/{part}" if part else current
            if current in made:
                continue
            with contextlib.suppress(OSError):  # it exists
                self.sftp.mkdir(current, 0o750)
            made.add(current)

    def rename(self, source: str, target: str) -> None:
        self.commands.append("rename")
        self.sftp.posix_rename(source, target)

    def cancel_running(self) -> None:
        """Close the channels of commands still running (called from a signal handler), so
        the wait for them ends now: Fabric otherwise waits for the remote command to end.
        The transport stays up, so the way back runs over the same connection."""
        for channel in list(getattr(self, "_channels", ())):
            with contextlib.suppress(Exception):
                if not channel.closed:
                    channel.close()

    def _track_channels(self) -> None:
        self._channels: weakref.WeakSet[Any] = weakref.WeakSet()
        original = self.conn.create_session

        def tracked() -> Any:
            channel = original()
            self._channels.add(channel)
            return channel

        self.conn.create_session = tracked

    def close(self) -> None:
        if self._sftp is not None:
            self._sftp.close()
            self._sftp = None
        self.conn.close()


def heredoc(command: str, text: str) -> str:
    """`{ command; }` fed `text` verbatim (quoted delimiter: no expansion inside)."""
    delimiter = "VEDFIN_EOF"
    while delimiter in text:
        delimiter += "_"
    body = text if text.endswith("\n") else text + "\n"
    return f"{{ {command}; }} <<'{delimiter}'\n{body}{delimiter}"


class _LineWriter:
    """A file-like sink that hands complete lines to a callback (live migration output)."""

    def __init__(self, sink: Any) -> None:
        self.sink, self.buffer = sink, ""

    def write(self, data: str) -> int:
        self.buffer += data
        while "\n" in self.buffer:
            line, self.buffer = self.buffer.split("\n", 1)
            self.sink(line)
        return len(data)

    def flush(self) -> None:
        pass
