"""The one place that touches SSH: open a checked connection, run, count handshakes.

Fabric's Connection accepts any host key it has never seen (AutoAddPolicy) and reads no
known_hosts file. A deploy tool must not: here the host key is checked against the
UserKnownHostsFile of the ssh_config entry (else ~/.ssh/known_hosts), and an unknown or changed
key stops the run unless the user explicitly accepts a new one (`--accept-new-host-key`) or names
the key they expect (`--host-key-fingerprint SHA256:...`).

known_hosts is read here, not by paramiko: paramiko's reader chokes on `@cert-authority` and
`@revoked` lines and its writer rewrites the whole file (dropping comments and key types it does
not know). This reader skips `@cert-authority` lines (paramiko cannot verify host certificates),
refuses any key on an `@revoked` line (for every host), and a new key is pinned by appending one
line; the file is never rewritten.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import hashlib
import io
import logging
import os
import re
import stat
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import paramiko
from fabric import Config as FabricConfig
from fabric import Connection
from fabric.runners import Remote as FabricRemote
from paramiko.sftp import CMD_HANDLE, CMD_OPEN, SFTP_FLAG_CREATE, SFTP_FLAG_TRUNC, SFTP_FLAG_WRITE

from vedfin_ops.config.secret_store import masked
from vedfin_ops.errors import CheckFailed, UsageError
from vedfin_ops.remote.command import Command, hide

HANDSHAKES = {"count": 0}
# paramiko's transport thread logs a failed handshake with its traceback; with no handler
# Python prints that on stderr, beside the one-line error the tool gives for it
logging.getLogger("paramiko").addHandler(logging.NullHandler())
FINGERPRINT_ENV = "VEDFIN_HOST_KEY_FINGERPRINT"


class HostError(CheckFailed):
    """The host could not be reached or trusted."""


def known_hosts_file(conn: Connection) -> Path:
    configured = conn.ssh_config.get("userknownhostsfile")
    if configured:
        return Path(os.path.expanduser(str(configured).split()[0]))
    return Path.home() / ".ssh" / "known_hosts"


# --- fingerprints and ssh_config values ----------------------------------------------------

def fingerprint(key: paramiko.PKey | bytes) -> str:
    """OpenSSH's form: `SHA256:` and the unpadded base64 of the SHA-256 of the key blob."""
    blob = key if isinstance(key, bytes) else key.asbytes()
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def normalize_fingerprint(text: str) -> str:
    """`SHA256:<43 base64 characters>` as `ssh-keygen -l` prints it; anything else is bad input."""
    value = text.strip().rstrip("=")
    body = value.removeprefix("SHA256:")
    try:
        ok = value.startswith("SHA256:") and len(base64.b64decode(body + "=", validate=True)) == 32
    except (binascii.Error, ValueError):
        ok = False
    if not ok:
        raise UsageError(f"--host-key-fingerprint (or ${FINGERPRINT_ENV}) {text.strip()!r}: "
                         f"not a SHA256 fingerprint "
                         f"(`ssh-keygen -l -f KEY.pub` prints one, e.g. SHA256:AbC...)")
    return value


_TIME_PART = re.compile(r"(\d+)([smhdwSMHDW]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def ssh_seconds(option: str, text: str) -> int:
    """An ssh_config time value (`15`, `10s`, `1m`, `1h30m`; units s m h d w) in seconds."""
    value = str(text).strip()
    parts = list(_TIME_PART.finditer(value))
    if not parts or "".join(part.group(0) for part in parts) != value:
        raise UsageError(f"ssh_config {option} {value!r}: not a time (seconds, or a number with "
                         f"s, m, h, d or w, e.g. 15, 30s, 1m)")
    return sum(int(number) * _UNITS[unit.lower()] for number, unit in
               (part.groups() for part in parts))


def keepalive_seconds(conn: Connection) -> int:
    """ServerAliveInterval of the ssh_config entry; 15 s when it names none; 0 turns it off."""
    configured = conn.ssh_config.get("serveraliveinterval")
    return 15 if configured in (None, "") else ssh_seconds("ServerAliveInterval", configured)


# --- known_hosts ---------------------------------------------------------------------------

def _matches(patterns: str, name: str) -> bool:
    """OpenSSH host patterns: hashed `|1|salt|hash`, `*`/`?` wildcards, `!` negation."""
    if patterns.startswith("|1|"):
        return bool(paramiko.HostKeys.hash_host(name, patterns) == patterns)
    found = False
    for pattern in patterns.lower().split(","):
        negated = pattern.startswith("!")
        glob = re.escape(pattern.removeprefix("!")).replace(r"\*", ".*").replace(r"\?", ".")
        if re.fullmatch(glob, name.lower()):
            if negated:
                return False
            found = True
    return found


@dataclass
class KnownHosts:
    """What a known_hosts file says: (patterns, key type, key blob) per usable line, and the
    blobs of revoked keys. Lines it cannot use (certificate authorities, broken lines) are
    skipped, as OpenSSH skips what it cannot parse."""

    path: Path
    entries: list[tuple[str, str, bytes]] = field(default_factory=list)
    revoked: set[bytes] = field(default_factory=set)
    authorities: int = 0  # @cert-authority lines, which this reader cannot use

    @classmethod
    def read(cls, path: Path) -> KnownHosts:
        known = cls(path)
        try:
            text = path.read_bytes().decode("utf-8", errors="replace") if path.exists() else ""
        except OSError as exc:
            raise UsageError(f"known_hosts {path}: cannot read it: "
                             f"{exc.strerror or exc}") from None
        for raw in text.splitlines():
            fields = raw.split()
            if not fields or fields[0].startswith("#"):
                continue
            marker = fields.pop(0) if fields[0].startswith("@") else None
            if marker == "@cert-authority":
                known.authorities += 1  # paramiko cannot verify host certificates
            if len(fields) < 3 or marker not in (None, "@revoked"):
                continue
            patterns, kind, data = fields[:3]
            try:
                blob = base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):
                continue
            if marker == "@revoked":
                known.revoked.add(blob)
            else:
                known.entries.append((patterns, kind, blob))
        return known

    def keys_for(self, name: str) -> list[tuple[str, bytes]]:
        return [(kind, blob) for patterns, kind, blob in self.entries
                if _matches(patterns, name)]


def known_name(host: str, port: int) -> str:
    """The name a host's key is filed under: `host`, or `[host]:port` off port 22."""
    return host if port == 22 else f"[{host}]:{port}"


def filed_under(conn: Connection) -> str:
    """The name `conn`'s host key is looked up and pinned under: its ssh_config's
    HostKeyAlias, as OpenSSH does (several hosts behind one address and port each keep a key
    of their own), else `known_name`."""
    alias = conn.ssh_config.get("hostkeyalias")
    if not alias:
        return known_name(conn.host, conn.port)
    if not re.fullmatch(r"[A-Za-z0-9._:\[\]-]+", str(alias)):
        # pinned verbatim, `*` or `,` would make one known_hosts line match other hosts
        raise UsageError(f"ssh_config HostKeyAlias {str(alias)!r} of {conn.host}: a host "
                         f"name, without wildcards, commas or spaces")
    return str(alias)


def append_known_host(path: Path, name: str, key: paramiko.PKey, hashed: bool = False) -> str:
    """Pin `key` for `name` by appending one line (the file is never rewritten); returns it."""
    blob = key.asbytes()
    kind = blob[4:4 + int.from_bytes(blob[:4], "big")].decode()
    line = f"{paramiko.HostKeys.hash_host(name) if hashed else name} {kind} " \
           f"{base64.b64encode(blob).decode()}\n"
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = "\n" + line  # finish the last line first
            os.write(fd, line.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise UsageError(f"known_hosts {path}: cannot pin the host key: "
                         f"{exc.strerror or exc}") from None
    return line


class _HostKeyCheck:
    """paramiko's missing-host-key policy, asked about every key: paramiko itself is given no
    known keys, so the whole decision is made here, before any authentication."""

    def __init__(self, conn: Connection, known: KnownHosts, accept_new: bool,
                 expected: str | None) -> None:
        self.conn, self.known = conn, known
        self.accept_new, self.expected = accept_new, expected

    def missing_host_key(self, client: Any, hostname: str, key: paramiko.PKey) -> None:
        blob, presented = key.asbytes(), fingerprint(key)
        where, path = _where(self.conn), self.known.path
        hostname = filed_under(self.conn)
        what = f"{key.get_name()} {presented}"
        if blob in self.known.revoked:
            raise HostError(f"{where}: the host key {what} is REVOKED (an @revoked line of "
                            f"{path}); refusing to connect")
        pinned = self.known.keys_for(hostname)
        if pinned and blob not in {known_blob for _, known_blob in pinned}:
            holds = ", ".join(sorted({f"{kind} {fingerprint(b)}" for kind, b in pinned}))
            raise HostError(f"{where}: the host key CHANGED (got {what}; {path} has {holds}). "
                            f"Someone may be intercepting the connection; if the server was "
                            f"rebuilt, remove its old line from {path}.")
        if self.expected is not None and presented != self.expected:
            raise HostError(f"{where}: the host key is {what}, not the expected "
                            f"{self.expected} (--host-key-fingerprint or "
                            f"${FINGERPRINT_ENV}); refusing to connect")
        if pinned:
            return
        if self.expected is None and not self.accept_new:
            raise HostError(f"{where}: unknown host key {what} (not in {path}); check it out "
                            f"of band (on the server: ssh-keygen -lf "
                            f"/etc/ssh/ssh_host_*_key.pub), then pass --host-key-fingerprint "
                            f"with the value you checked, or --accept-new-host-key to pin it"
                            + (" (its @cert-authority lines are not used: host certificates "
                               "cannot be checked here)" if self.known.authorities else ""))
        hashed = str(self.conn.ssh_config.get("hashknownhosts", "no")).lower() == "yes"
        append_known_host(path, hostname, key, hashed)
        self.known.entries.append((hostname, key.get_name(), blob))


def _prefer_known_key_types(transport: paramiko.Transport, kinds: list[str]) -> None:
    """Ask for the key types known_hosts holds first, as OpenSSH orders HostKeyAlgorithms."""
    options = transport.get_security_options()
    available = list(options.key_types)
    wanted: list[str] = []
    for kind in kinds:
        for name in (("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa") if kind == "ssh-rsa"
                     else (kind,)):
            if name in available and name not in wanted:
                wanted.append(name)
    if wanted:
        options.key_types = wanted + [name for name in available if name not in wanted]


def secure(conn: Connection, accept_new_host_key: bool = False,
           host_key_fingerprint: str | None = None) -> Connection:
    """Make `conn` check host keys (and optionally pin a new one) before it ever opens.

    `host_key_fingerprint` (`SHA256:...`): the presented key must be this one; a key not yet in
    known_hosts is then pinned as with `accept_new_host_key`. A key that differs from the one
    known_hosts holds is refused whatever the flags."""
    # On the instance itself: a Connection's unknown attributes are written into its Config,
    # which other Connections share (a cluster's nodes: Host.sibling), so a mark set the
    # usual way would make every later Connection look checked while none of its keys is.
    if vars(conn).get("_vedfin_secured", False):
        return conn
    expected = normalize_fingerprint(host_key_fingerprint) if host_key_fingerprint else None
    if isinstance(conn.gateway, Connection):  # ProxyJump: the jump host is checked too
        secure(conn.gateway, accept_new_host_key)
    path = known_hosts_file(conn)
    known = KnownHosts.read(path)
    keepalive = keepalive_seconds(conn)
    client = conn.client
    # Remote commands never read the user's terminal: stdin is given explicitly or not at all.
    conn.config.run.in_stream = False
    conn.config.runners.remote = _Remote
    client.set_missing_host_key_policy(
        _HostKeyCheck(conn, known, accept_new_host_key, expected))

    def transport_factory(sock: Any, **kwargs: Any) -> paramiko.Transport:
        transport = paramiko.Transport(sock, **kwargs)
        kinds = [kind for kind, _ in known.keys_for(filed_under(conn))]
        _prefer_known_key_types(transport, kinds)
        return transport

    conn.connect_kwargs = {**conn.connect_kwargs, "transport_factory": transport_factory}
    original_open = conn.open
    opening = threading.Lock()  # the steps after live run in threads: one reconnects

    def checked_open() -> Any:
        with opening:
            if conn.is_connected:
                return None
            try:
                result = original_open()
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    client.close()
                _raise_open_error(conn, exc)
                raise
            HANDSHAKES["count"] += 1
            if conn.transport is not None:
                conn.transport.set_keepalive(keepalive)
            return result

    conn.open = checked_open
    vars(conn)["_vedfin_secured"] = True
    return conn


def _raise_open_error(conn: Connection, exc: BaseException) -> None:
    """One line for what went wrong while connecting; our own errors pass through."""
    where = _where(conn)
    if isinstance(exc, paramiko.AuthenticationException):
        raise HostError(f"{where}: the server refused the key for user {conn.user}") from None
    if isinstance(exc, paramiko.SSHException):
        raise HostError(f"{where}: ssh: {exc}") from None
    if isinstance(exc, TimeoutError):
        raise HostError(f"cannot reach {where}: timed out ({exc})") from None
    if isinstance(exc, OSError):
        raise HostError(f"cannot reach {where}: {exc.strerror or exc}") from None


def _where(conn: Connection) -> str:
    return f"{conn.user}@{conn.host}:{conn.port}"


def connect(host: str, ssh_config: str | os.PathLike[str] | None = None,
            accept_new_host_key: bool = False, connect_timeout: int = 15,
            host_key_fingerprint: str | None = None) -> Connection:
    """A checked Connection for library callers (`fab -H` builds its own; tasks secure it)."""
    config = FabricConfig(runtime_ssh_path=str(ssh_config)) if ssh_config else FabricConfig()
    if ssh_config:
        config.load_ssh_config()
    conn = Connection(host, config=config, connect_timeout=connect_timeout)
    return secure(conn, accept_new_host_key, host_key_fingerprint)


class RemoteHost(Protocol):
    """What the pipeline needs of a host: `Host` over SSH, or a test's scripted fake host.
    (Not `config.model.Remote`, the config's section that says where the host keeps things.)"""

    secrets: list[str]
    commands: list[str]

    def run(self, command: str | Command, *, what: str, stdin: str | None = None,
            check: bool = True, stream: Any = None, timeout: float | None = 600,
            secret_stdin: str | None = None) -> str: ...

    def put_tree(self, remote_dir: str, files: dict[str, str], private: Any) -> None: ...

    def rename(self, source: str, target: str) -> None: ...

    def open_read(self, path: str) -> Any: ...

    def open_new(self, path: str, mode: int) -> Any: ...

    def redact(self, text: str) -> str: ...


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


class WindowedReader:
    """A remote file read front to back, at most `window` bytes asked ahead (`readv` of 32 KiB
    requests, many in flight). paramiko's `prefetch()` asks for the whole file at once and
    keeps what arrives until it is read: with a consumer slower than SSH (an upload to a far
    bucket), a whole dump would sit in this process's memory."""

    CHUNK = 32768

    def __init__(self, handle: paramiko.SFTPFile, size: int, window: int = 8 * 2**20) -> None:
        self.handle, self.size, self.window = handle, size, window
        self.asked = 0  # the next byte not yet requested
        self.buffer = bytearray()

    def read(self, n: int | None = -1) -> bytes:
        want = self.size if n is None or n < 0 else n
        while len(self.buffer) < want and self.asked < self.size:
            end = min(self.size, self.asked + self.window)
            blocks = [(at, min(self.CHUNK, end - at)) for at in range(self.asked, end,
                                                                     self.CHUNK)]
            for data in self.handle.readv(blocks):
                self.buffer += data
            self.asked = end
        out = bytes(self.buffer[:want])
        del self.buffer[:want]
        return out

    def close(self) -> None:
        self.handle.close()

    def __enter__(self) -> WindowedReader:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class Host:
    """One SSH connection for a whole run: every step's commands and uploads go through here.

    Counts handshakes and commands, so a benchmark (and a test) can say how much a deploy
    talks to the host.
    """

    def __init__(self, conn: Connection, accept_new_host_key: bool = False,
                 host_key_fingerprint: str | None = None) -> None:
        self.conn = secure(conn, accept_new_host_key, host_key_fingerprint)
        self.accept_new_host_key = accept_new_host_key
        self.commands: list[str] = []
        self.secrets: list[str] = []
        self._sftp: paramiko.SFTPClient | None = None
        self._track_channels()
        self.stopping = False  # set by a signal's cancel_running: other threads start nothing

    def redact(self, text: str) -> str:
        """Whatever the host printed, no secret value of this run leaves through us, nor the
        password of a URL (`postgresql://user:***@host`)."""
        return masked(text, self.secrets)

    @property
    def name(self) -> str:
        return _where(self.conn)

    def sibling(self, host: str, accept_new_host_key: bool = False) -> Host:
        """Another machine reached the way this one is (the same ssh_config, -S file and
        user defaults): a cluster's other nodes. Its key must be pinned already: neither
        --accept-new-host-key nor a fingerprint given for this host is about that one
        (`cluster.join` passes its own). The caller closes it."""
        from fabric import Connection

        other = Host(Connection(host, config=self.conn.config,
                                connect_timeout=self.conn.connect_timeout or 15),
                     accept_new_host_key)
        other.secrets = list(self.secrets)
        return other

    def run(self, command: str | Command, *, what: str, stdin: str | None = None,
            check: bool = True, stream: Any = None, timeout: float | None = 600,
            secret_stdin: str | None = None) -> str:
        """Run one command; `what` names the step in an error. Output is returned, not shown,
        unless `stream` (a callable taking each line) is given.

        `stdin` becomes a here-document, part of the command line every user of the host can
        read in `ps`; a secret goes as `secret_stdin` instead (or as a `Command`'s own),
        over the channel's own stdin (closed at its end), for a command that reads it whole
        (`docker login --password-stdin`). A `Command`'s secrets are masked in whatever
        this returns to a stream or raises, besides the host's own (`redact`)."""
        self.commands.append(what)
        if self.stopping and threading.current_thread() is not threading.main_thread():
            raise RemoteError(f"{what} on {self.name}: not started, the run is stopping")
        self.conn.open()
        line, secret_stdin, redact = prepare(command, secret_stdin, self.redact)
        kwargs: dict[str, Any] = {"hide": True, "warn": True, "timeout": timeout,
                                  "in_stream": False}
        if secret_stdin is not None and stdin is not None:
            raise ValueError("stdin and secret_stdin are one input: give one")
        if secret_stdin is not None:
            kwargs.update(in_stream=_WholeStdin(secret_stdin), echo_stdin=False)
        elif stdin is not None:
            # A here-document, not a stdin stream: a command that exits early (psql on the
            # first error) must not race a writer thread into "Socket is closed".
            line = heredoc(line, stdin)
        if stream is not None:
            kwargs["out_stream"] = _LineWriter(lambda text: stream(redact(text)))
            kwargs["err_stream"] = _LineWriter(lambda text: stream(redact(text)))
        try:
            result = self.conn.run(line, **kwargs)
        except Exception as exc:  # invoke's CommandTimedOut and transport errors
            text = str(exc).strip().splitlines()
            raise RemoteError(redact(f"{what}: {type(exc).__name__}: "
                                     f"{text[-1] if text else ''}")) from None
        if check and not result.ok:
            transport = self.conn.transport
            if result.exited == -1 and (transport is None or not transport.is_active()):
                raise RemoteError(f"{what}: the SSH connection to {self.name} was lost")
            output = redact(f"{result.stdout}\n{result.stderr}")
            if "docker.sock" in output and "permission denied" in output.lower():
                raise RemoteError(f"{what}: user {self.conn.user} on {self.conn.host} "
                                  f"may not use Docker (add it to the docker group)", output)
            raise RemoteError(redact(
                f"{what} failed on {self.name} (exit {result.exited}): "
                f"{_telling_line(result.stderr or result.stdout)}"), output)
        return str(result.stdout)

    @property
    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None or self._sftp.get_channel() is None or \
                self._sftp.get_channel().closed:
            self.conn.open()
            try:
                self._sftp = self.conn.client.open_sftp()
            except paramiko.SSHException as exc:
                transport = self.conn.client.get_transport()
                if type(exc) is paramiko.SSHException and "Channel closed" in str(exc) and \
                        transport is not None and transport.is_active():
                    raise HostError(f"{self.name} has no SFTP subsystem: enable `Subsystem sftp "
                                    f"internal-sftp` (or the sftp-server path) in its "
                                    f"sshd_config, then reload sshd") from None
                raise HostError(f"{self.name}: SFTP did not start: {exc}") from None
        return self._sftp

    def put_tree(self, remote_dir: str, files: dict[str, str], private: Any) -> None:
        """Upload files under `remote_dir`; `private(path)` files are 0600 before any byte.

        A private file's folder (`env/`) is made 0700 first (and chmod-ed, in case it existed
        or the server's umask took bits away); the file itself is created 0600 by the SFTP open
        request (its attributes carry the mode: see `open_new`), so it is never readable by
        others, not even empty. It is also chmod-ed before the first byte, for a file that
        existed already (an open does not change an existing file's mode)."""
        self.commands.append("upload")
        made: set[str] = set()
        for rel, text in sorted(files.items()):
            path = f"{remote_dir}/{rel}"
            parent = path.rsplit("/", 1)[0]
            secret = bool(private(rel))
            mode = 0o600 if secret else 0o640
            try:
                if parent not in made:
                    self._mkdirs(parent, remote_dir, made,
                                 0o700 if secret and parent != remote_dir else 0o750)
                handle = self.open_new(path, mode)
                try:
                    handle.chmod(mode)
                    handle.write(text.encode())
                finally:
                    handle.close()
            except RemoteError:
                raise
            except (OSError, paramiko.SSHException) as exc:
                raise self._sftp_error("upload", path, exc) from None

    def open_read(self, path: str) -> WindowedReader:
        """`path` read front to back with a bounded read-ahead (a dump streamed off the host
        without a copy on this machine)."""
        try:
            handle = self.sftp.open(path, "rb")
            size = handle.stat().st_size or 0
        except (OSError, paramiko.SSHException) as exc:
            raise self._sftp_error("read", path, exc) from None
        return WindowedReader(handle, size)

    def open_new(self, path: str, mode: int) -> paramiko.SFTPFile:
        """`path` opened for writing (created, or truncated), created with `mode` by the open
        request itself. paramiko's SFTPClient.open sends no attributes, so a new file would be
        born 0666 less the server's umask until a chmod; this sends the SFTP open with the
        mode in its attributes, as `sftp -p`/OpenSSH's sftp client can."""
        sftp = self.sftp
        attributes = paramiko.SFTPAttributes()
        attributes.st_mode = mode
        kind, message = sftp._request(CMD_OPEN, path,
                                      SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | SFTP_FLAG_TRUNC,
                                      attributes)
        if kind != CMD_HANDLE:
            raise paramiko.SFTPError("Expected handle")
        return paramiko.SFTPFile(sftp, message.get_binary(), "w")

    def _mkdirs(self, path: str, root: str, made: set[str], leaf_mode: int = 0o750) -> None:
        parts = path[len(root):].strip("/").split("/") if path != root else []
        current = root
        for index, part in enumerate(["", *parts]):
            current = f"{current}/{part}" if part else current
            if current in made:
                continue
            mode = leaf_mode if index == len(parts) else 0o750
            try:
                self.sftp.mkdir(current, mode)
            except OSError as exc:  # it exists (SFTP says only "Failure"), or may not be made
                try:
                    exists = stat.S_ISDIR(self.sftp.stat(current).st_mode or 0)
                except OSError:
                    exists = False
                if not exists:
                    raise self._sftp_error("mkdir", current, exc) from None
            if mode == 0o700:
                self.sftp.chmod(current, mode)
            made.add(current)

    def _sftp_error(self, action: str, path: str, exc: BaseException) -> RemoteError:
        """One line naming the remote path and why (SFTP's own words, never a traceback)."""
        number = getattr(exc, "errno", None)
        if isinstance(exc, PermissionError) or number == errno.EACCES:
            reason = "permission denied"
        elif isinstance(exc, FileNotFoundError) or number == errno.ENOENT:
            reason = "no such file or folder"
        else:
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return RemoteError(self.redact(f"{action} on {self.name}: {path}: {reason}"))

    def rename(self, source: str, target: str) -> None:
        self.commands.append("rename")
        try:
            self.sftp.posix_rename(source, target)
        except (OSError, paramiko.SSHException) as exc:
            raise self._sftp_error("rename", f"{source} -> {target}", exc) from None

    def cancel_running(self) -> None:
        """Close the channels of commands still running (called from a signal handler), so
        the wait for them ends now: Fabric otherwise waits for the remote command to end.
        The transport stays up, so the way back runs over the same connection. A step's
        thread between two commands starts no other (`stopping`, until the next run); the
        main thread's way back runs on."""
        self.stopping = True
        channels: list[Any] = []
        for _ in range(10):  # a step's thread may open one meanwhile: read the set again
            try:
                channels = list(getattr(self, "_channels", ()))
                break
            except RuntimeError:
                continue
        for channel in channels:
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

    @contextlib.contextmanager
    def forward(self, remote_port: int) -> Any:
        """127.0.0.1:`remote_port` on the host, reachable on a local port for the duration:
        a service the host keeps off its public address (Uptime Kuma's API) is spoken to
        through the run's own checked SSH link, never over the open internet."""
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            local = probe.getsockname()[1]
        try:
            forwarding = self.conn.forward_local(local, remote_port=remote_port,
                                                 remote_host="127.0.0.1",
                                                 local_host="127.0.0.1")
            forwarding.__enter__()
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise RemoteError(f"tunnel to port {remote_port} on {self.name} failed: "
                              f"{_telling_line(str(exc)) or type(exc).__name__}") from None
        try:
            _listening(local, f"tunnel to port {remote_port} on {self.name}")
            yield local
        finally:
            with contextlib.suppress(Exception):
                forwarding.__exit__(None, None, None)

    def close(self) -> None:
        if self._sftp is not None:
            self._sftp.close()
            self._sftp = None
        self.conn.close()


def _listening(port: int, what: str, seconds: float = 10.0) -> None:
    """Fabric's tunnel binds its local port in a thread of its own after `forward_local`
    returns: a client that connects at once can be refused. Wait (bounded) until it accepts."""
    import socket

    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
            return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise RemoteError(f"{what}: its local end 127.0.0.1:{port} never listened "
                                  f"({exc.strerror or type(exc).__name__})") from None
            time.sleep(0.05)


def prepare(command: str | Command, secret_stdin: str | None,
            redact: Callable[[str], str]) -> tuple[str, str | None, Callable[[str], str]]:
    """What a host runs for `command` (its line, its secret stdin) and how whatever comes back
    is masked: a `Command`'s line shown masked wherever it is printed back (a timeout's
    message), its secrets hidden, then `redact` (the host's secrets, URL passwords)."""
    if not isinstance(command, Command):
        return command, secret_stdin, redact
    if command.secret_stdin is not None:
        if secret_stdin is not None:
            raise ValueError("the command carries its secret stdin: give no other")
        secret_stdin = command.secret_stdin.value
    line, shown, hidden = command.render(), command.masked(), command.secrets

    def masked(text: str) -> str:
        if line != shown:
            text = text.replace(line, shown)
        return redact(hide(text, hidden))

    return line, secret_stdin, masked


def heredoc(command: str, text: str) -> str:
    """`{ command; }` fed `text` verbatim (quoted delimiter: no expansion inside)."""
    delimiter = "VEDFIN_EOF"
    while delimiter in text:
        delimiter += "_"
    body = text if text.endswith("\n") else text + "\n"
    return f"{{ {command}; }} <<'{delimiter}'\n{body}{delimiter}"


class _Remote(FabricRemote):  # type: ignore[misc]  # fabric ships no types
    """Fabric's runner, but a command that ends before reading its stdin (a refusal: a file
    not ours, a lock taken) closes the channel under the write: the bytes it never read are
    not the error. Its exit code and stderr say what happened, where Invoke would raise
    "Socket is closed" from its stdin thread and lose both."""

    def _write_proc_stdin(self, data: bytes) -> None:
        try:
            self.channel.sendall(data)
        except OSError:
            if not self.channel.closed:
                raise

    def close_proc_stdin(self) -> None:
        try:
            self.channel.shutdown_write()
        except OSError:
            if not self.channel.closed:
                raise


class _WholeStdin(io.StringIO):
    """A secret stdin handed over in one write. Invoke reads a stream that is not a terminal
    one byte per loop and naps 10 ms between bytes: a 661-byte Netdata file took 7 s, a
    registry password half a second. One write also lands before a command that exits
    without reading (a refusal) closes the channel."""

    def read(self, size: int | None = -1) -> str:
        return super().read()


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
