"""The one place that touches SSH: open a checked connection, run, count handshakes.

Fabric's Connection accepts any host key it has never seen (AutoAddPolicy) and reads no
known_hosts file. A deploy tool must not: here the host key is checked against the
UserKnownHostsFile of the ssh_config entry (else ~/.ssh/known_hosts), and an unknown or changed
key stops the run unless the user explicitly accepts a new one.
"""

from __future__ import annotations

import os
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
