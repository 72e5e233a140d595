"""The release's env files reach the host 0600 from their first byte, in a 0700 `env/`: the
real `Host.put_tree` and `open_new`, over a real SFTP session to an in-process server that
does what OpenSSH's sftp-server does with an upload's modes (open(2) and mkdir(2) with the
mode the request carries, else 0666/0777; chmod and stat as asked). No sshd: the scripted
host replaces put_tree, and tests/remote/test_host_keys.py's sshd test is slow."""

from __future__ import annotations

import os
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest
from fabric import Connection

from tests.conftest import SHIPPED
from vedfin_ops import load_config
from vedfin_ops.remote.host import Host
from vedfin_ops.rendering.files import Rendered, render


class _Seen:
    """What the server saw: each path's mode when it was created, and at each write."""

    def __init__(self) -> None:
        self.created: dict[str, int] = {}
        self.written: dict[str, set[int]] = {}


def _mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


class _Handle(paramiko.SFTPHandle):
    def __init__(self, path: str, fd: int, seen: _Seen) -> None:
        super().__init__(0)
        self.filename, self.seen = path, seen
        self.writefile = self.readfile = os.fdopen(fd, "r+b")

    def write(self, offset: int, data: bytes) -> int:
        self.seen.written.setdefault(self.filename, set()).add(_mode(self.filename))
        self.writefile.seek(offset)
        self.writefile.write(data)
        self.writefile.flush()
        return paramiko.SFTP_OK

    def stat(self) -> paramiko.SFTPAttributes:
        return paramiko.SFTPAttributes.from_stat(os.fstat(self.writefile.fileno()))

    def chattr(self, attr: paramiko.SFTPAttributes) -> int:
        paramiko.SFTPServer.set_file_attr(self.filename, attr)
        return paramiko.SFTP_OK


def _given_mode(attr: paramiko.SFTPAttributes | None, default: int) -> int:
    if attr is not None and attr._flags & attr.FLAG_PERMISSIONS:
        return (attr.st_mode or 0) & 0o7777
    return default


class _OpenSshLike(paramiko.SFTPServerInterface):
    """sftp-server.c's process_open, process_mkdir, process_setstat and process_stat."""

    seen = _Seen()

    def open(self, path: str, flags: int, attr: paramiko.SFTPAttributes) -> Any:
        fd = os.open(path, flags, _given_mode(attr, 0o666))
        self.seen.created.setdefault(path, stat.S_IMODE(os.fstat(fd).st_mode))
        return _Handle(path, fd, self.seen)

    def mkdir(self, path: str, attr: paramiko.SFTPAttributes) -> int:
        try:
            os.mkdir(path, _given_mode(attr, 0o777))
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno)
        self.seen.created[path] = _mode(path)
        return paramiko.SFTP_OK

    def chattr(self, path: str, attr: paramiko.SFTPAttributes) -> int:
        paramiko.SFTPServer.set_file_attr(path, attr)
        return paramiko.SFTP_OK

    def stat(self, path: str) -> Any:
        try:
            return paramiko.SFTPAttributes.from_stat(os.stat(path))
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno)

    lstat = stat


class _AnyUser(paramiko.ServerInterface):
    def get_allowed_auths(self, username: str) -> str:
        return "none"

    def check_auth_none(self, username: str) -> int:
        return paramiko.AUTH_SUCCESSFUL

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return paramiko.OPEN_SUCCEEDED


@pytest.fixture(scope="module")
def host_key() -> paramiko.RSAKey:
    return paramiko.RSAKey.generate(1024)


@pytest.fixture
def host(host_key: paramiko.RSAKey) -> Iterator[tuple[Host, _Seen]]:
    """Our Host, its SFTP session on a socket pair to the in-process server; umask 022, so a
    file created without its mode would be 0644 and seen."""
    ours, theirs = socket.socketpair()
    server = paramiko.Transport(theirs)
    server.add_server_key(host_key)
    server.set_subsystem_handler("sftp", paramiko.SFTPServer, _OpenSshLike)
    server.start_server(event=threading.Event(), server=_AnyUser())
    client = paramiko.Transport(ours)
    client.connect()
    client.auth_none("deployer")
    _OpenSshLike.seen = _Seen()
    real = Host(Connection("vps", user="deployer"))
    real._sftp = paramiko.SFTPClient.from_transport(client)
    umask = os.umask(0o022)
    try:
        yield real, _OpenSshLike.seen
    finally:
        os.umask(umask)
        client.close()
        server.close()


def test_a_releases_env_files_are_0600_from_their_first_byte_in_a_0700_env(
        host: tuple[Host, _Seen], tmp_path: Path) -> None:
    """The upload deploy makes (the rendered release, `Rendered.is_secret` deciding)."""
    real, seen = host
    files = dict(render(load_config(SHIPPED), "production", tag="v1",
                        secrets={"POSTGRES_PASSWORD": "pw-93"}))
    secret = sorted(rel for rel in files if Rendered.is_secret(rel))
    # what holds a password, a key or a webhook: the env files and Netdata's notifications
    assert secret == ["env/api-production.env", "env/postgres.env", "env/web-production.env",
                      "monitoring/health_alarm_notify.conf"]
    release = tmp_path / "releases" / ".tmp-r1"
    (tmp_path / "releases").mkdir()
    real.put_tree(str(release), files, Rendered.is_secret)
    for rel in files:
        path = str(release / rel)
        want = 0o600 if rel in secret else 0o640
        assert (_mode(path), seen.created[path], *seen.written[path]) == (want,) * (
            2 + len(seen.written[path])), rel
    assert _mode(str(release / "env")) == seen.created[str(release / "env")] == 0o700
    assert _mode(str(release)) == 0o750 and _mode(str(release / "stacks")) == 0o750
    assert (release / "env/postgres.env").read_text().count("pw-93") == 1


def test_an_env_file_that_was_readable_is_private_before_its_first_byte(
        host: tuple[Host, _Seen], tmp_path: Path) -> None:
    """An upload over an earlier one (an open keeps an existing file's mode): env/ and the
    file are made private first, so the secret is never written while others can read."""
    real, seen = host
    (tmp_path / "env").mkdir(mode=0o755)
    (tmp_path / "env/api.env").write_text("OLD=1\n")
    os.chmod(tmp_path / "env/api.env", 0o644)
    real.put_tree(str(tmp_path), {"env/api.env": "JWT_SECRET=s3cret\n", "stack.yml": "x: 1\n"},
                  lambda rel: rel.startswith("env/"))
    assert seen.written[str(tmp_path / "env/api.env")] == {0o600}
    assert _mode(str(tmp_path / "env/api.env")) == 0o600
    assert _mode(str(tmp_path / "env")) == 0o700
    assert (tmp_path / "env/api.env").read_text() == "JWT_SECRET=s3cret\n"
