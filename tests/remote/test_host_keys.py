"""remote/host.py against a real sshd: host keys, known_hosts, keepalive, SFTP uploads, errors.

Each server is the test's own throw-away sshd on 127.0.0.1 (a port in 22100-22199), with its own
host key and authorized key in a temporary folder; it is stopped when the test ends. Nothing of
the sandbox (nor the system's sshd or ~/.ssh) is touched.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import stat
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
import pytest

from vedfin_ops.errors import CheckFailed, UsageError
from vedfin_ops.remote import host as host_module
from vedfin_ops.remote.host import Host, HostError, RemoteError, connect, fingerprint, ssh_seconds

SSHD = Path("/usr/sbin/sshd")
needs_sshd = pytest.mark.skipif(not SSHD.exists() or os.geteuid() != 0
                                or shutil.which("ssh-keygen") is None,
                                reason="needs /usr/sbin/sshd, ssh-keygen and root")

SSHD_CONFIG = """ListenAddress 127.0.0.1
HostKey {folder}/host_key
PidFile none
AllowUsers root nobody
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
AuthorizedKeysFile {folder}/authorized_keys
LogLevel INFO
"""


def keygen(path: Path, kind: str = "ed25519") -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", path.name, "-f", str(path)],
                   check=True)


def openssh_fingerprint(public_key: Path) -> str:
    """What `ssh-keygen -l` (OpenSSH itself) says the key's fingerprint is."""
    out = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(public_key)],
                         check=True, capture_output=True, text=True).stdout
    return out.split()[1]


@dataclass
class Server:
    folder: Path
    port: int
    process: subprocess.Popen[str]
    log: list[str] = field(default_factory=list)

    @property
    def host_pub(self) -> Path:
        return self.folder / "host_key.pub"

    def host_line(self) -> tuple[str, str]:
        kind, blob = self.host_pub.read_text().split()[:2]
        return kind, blob

    def known_name(self) -> str:
        return f"[127.0.0.1]:{self.port}"

    def ssh_config(self, known_hosts: Path, user: str = "root", extra: str = "") -> Path:
        path = self.folder / f"ssh_config-{user}"
        path.write_text(f"Host target\n  HostName 127.0.0.1\n  Port {self.port}\n"
                        f"  User {user}\n  IdentityFile {self.folder}/client_key\n"
                        f"  IdentitiesOnly yes\n  UserKnownHostsFile {known_hosts}\n{extra}")
        return path


def _drain(server: Server) -> None:
    """Keep reading sshd's log, so it never blocks on a full pipe."""
    server.log.extend(server.process.stderr or ())


def _start(folder: Path, subsystem: str | None, more_keys: tuple[str, ...] = ()) -> Server:
    config = folder / "sshd_config"
    config.write_text(SSHD_CONFIG.format(folder=folder)
                      + "".join(f"HostKey {folder}/host_key_{kind}\n" for kind in more_keys)
                      + (f"Subsystem sftp {subsystem}\n" if subsystem else ""))
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
    from sandbox.sshd import free_port

    for _ in range(20):  # another test run may take the port between our probe and sshd's bind
        port = free_port(22100)
        process = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config), "-p", str(port)],
                                   stderr=subprocess.PIPE, text=True)
        assert process.stderr is not None
        lines: list[str] = []
        for line in process.stderr:  # sshd says when it listens, or why it cannot
            lines.append(line)
            if "Server listening" in line:
                server = Server(folder, port, process, lines)
                threading.Thread(target=_drain, args=(server,), daemon=True).start()
                return server
            if "Cannot bind" in line or "Bind to port" in line:
                break
        process.kill()
        process.wait()
        if not any("Bind" in line or "bind" in line for line in lines):
            raise RuntimeError(f"sshd did not start: {''.join(lines)}")
    raise RuntimeError("no free port for a test sshd in 22100-22199")


@pytest.fixture
def sshd() -> Iterator[Callable[..., Server]]:
    """Start test sshds: `sshd()` with SFTP, `sshd(subsystem=None)` without it."""
    servers: list[Server] = []
    folders: list[Path] = []

    def start(subsystem: str | None = "internal-sftp", more_keys: tuple[str, ...] = ()) -> Server:
        # Readable by `nobody` too (sshd reads authorized_keys as the user logging in).
        folder = Path(tempfile.mkdtemp(prefix="vedfin-test-sshd-", dir="/tmp"))
        folders.append(folder)
        folder.chmod(0o755)
        keygen(folder / "host_key")
        for kind in more_keys:
            keygen(folder / f"host_key_{kind}", kind)
        keygen(folder / "client_key")
        shutil.copy(folder / "client_key.pub", folder / "authorized_keys")
        (folder / "authorized_keys").chmod(0o644)
        server = _start(folder, subsystem, more_keys)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.process.terminate()
        server.process.wait()
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def other_key(tmp_path: Path) -> tuple[str, str, Path]:
    """An ed25519 key that is not the server's: (type, base64, public key file)."""
    keygen(tmp_path / "other")
    kind, blob = (tmp_path / "other.pub").read_text().split()[:2]
    return kind, blob, tmp_path / "other.pub"


def opened(config: Path, **options: object) -> Host:
    host = Host(connect("target", config, **options))  # type: ignore[arg-type]
    host.conn.open()
    return host


# --- fingerprints -------------------------------------------------------------------------

def test_fingerprint_is_the_openssh_sha256_form(other_key: tuple[str, str, Path]) -> None:
    kind, blob, pub = other_key
    assert fingerprint(base64.b64decode(blob)) == openssh_fingerprint(pub)
    key = paramiko.PKey.from_type_string(kind, base64.b64decode(blob))
    assert fingerprint(key) == openssh_fingerprint(pub)
    assert fingerprint(key).startswith("SHA256:") and not fingerprint(key).endswith("=")


@needs_sshd
def test_an_unknown_host_key_is_refused_with_its_fingerprint(sshd: Callable[..., Server],
                                                            tmp_path: Path) -> None:
    server = sshd()
    known = tmp_path / "known_hosts"
    known.write_text("")
    with pytest.raises(HostError) as info:
        opened(server.ssh_config(known))
    message = str(info.value)
    assert f"unknown host key ssh-ed25519 {openssh_fingerprint(server.host_pub)}" in message
    assert "--accept-new-host-key" in message and "--host-key-fingerprint" in message
    assert not message.startswith("error:") and "\n" not in message
    assert known.read_text() == ""
    # A host trusted only through a certificate authority: the message says why it is unknown.
    kind, blob = server.host_line()
    known.write_text(f"@cert-authority * {kind} {blob}\n")
    with pytest.raises(HostError, match=r"unknown host key .*@cert-authority lines are not used"):
        opened(server.ssh_config(known))


@needs_sshd
def test_a_cluster_node_reached_beside_a_checked_host_is_checked_too(
        sshd: Callable[..., Server], tmp_path: Path) -> None:
    """A node's link (Host.sibling) shares the first link's Fabric config: its host key is
    checked all the same (a mark kept in that config once made every later link look
    checked), and filed under the ssh_config's HostKeyAlias when there is one."""
    first, node = sshd(), sshd()
    known = tmp_path / "known_hosts"
    kind, blob = first.host_line()
    known.write_text(f"[127.0.0.1]:{first.port} {kind} {blob}\n")
    config = first.ssh_config(known, extra=(
        f"Host node1\n  HostName 127.0.0.1\n  Port {node.port}\n  User root\n"
        f"  IdentityFile {node.folder}/client_key\n  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {known}\n  HostKeyAlias node1\n"))
    host = opened(config)
    with pytest.raises(HostError, match="unknown host key"):
        host.sibling("node1").run("true", what="node1")
    node_kind, node_blob = node.host_line()
    with known.open("a") as fh:  # pinned under its alias, not its address and port
        fh.write(f"node1 {node_kind} {node_blob}\n")
    assert host.sibling("node1").run("echo ok", what="node1").strip() == "ok"
    host.close()


# --- known_hosts: read without choking, pinned by appending one line -----------------------

def messy_known_hosts(other: tuple[str, str, Path]) -> bytes:
    kind, blob, _ = other
    return (
        "# hosts of the team; keep this comment\n"
        "\n"
        f"@cert-authority *.corp.example {kind} {blob} team CA\n"
        f"@revoked gone.example {kind} {blob}\n"
        "strange.example ssh-futurekey AAAAEnNzaC1mdXR1cmVrZXkAAAAB\n"
        "sk.example sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29tAAAAIG\n"
        f"other.example,10.0.0.9 {kind} {blob}  # trailing words\n"
        "   # an indented comment\n"
    ).encode()


@needs_sshd
def test_accept_new_appends_one_line_and_keeps_every_byte(
        sshd: Callable[..., Server], tmp_path: Path, other_key: tuple[str, str, Path]) -> None:
    server = sshd()
    known = tmp_path / "known_hosts"
    before = messy_known_hosts(other_key)
    known.write_bytes(before)
    config = server.ssh_config(known)
    opened(config, accept_new_host_key=True).close()
    after = known.read_bytes()
    assert after.startswith(before)
    kind, blob = server.host_line()
    assert after[len(before):].decode() == f"{server.known_name()} {kind} {blob}\n"
    # OpenSSH reads the pinned line, and the next run connects without the flag.
    found = subprocess.run(["ssh-keygen", "-F", server.known_name(), "-f", str(known)],
                           capture_output=True, text=True, check=False)
    assert found.returncode == 0 and blob in found.stdout
    opened(config).close()
    assert known.read_bytes() == after


@needs_sshd
def test_a_pin_finishes_a_last_line_without_newline(sshd: Callable[..., Server],
                                                   tmp_path: Path) -> None:
    server = sshd()
    known = tmp_path / "known_hosts"
    known.write_bytes(b"# no newline at the end")
    opened(server.ssh_config(known), accept_new_host_key=True).close()
    kind, blob = server.host_line()
    assert known.read_text() == (f"# no newline at the end\n{server.known_name()} {kind} {blob}\n")


@needs_sshd
def test_a_pin_is_hashed_when_ssh_config_says_hash_known_hosts(sshd: Callable[..., Server],
                                                              tmp_path: Path) -> None:
    server = sshd()
    known = tmp_path / "known_hosts"
    config = server.ssh_config(known, extra="  HashKnownHosts yes\n")
    opened(config, accept_new_host_key=True).close()
    line = known.read_text()
    assert line.startswith("|1|") and line.count("\n") == 1 and "127.0.0.1" not in line
    found = subprocess.run(["ssh-keygen", "-F", server.known_name(), "-f", str(known)],
                           capture_output=True, text=True, check=False)
    assert found.returncode == 0
    opened(config).close()


@needs_sshd
def test_a_new_known_hosts_file_is_private(sshd: Callable[..., Server], tmp_path: Path) -> None:
    server = sshd()
    known = tmp_path / "new" / "known_hosts"
    opened(server.ssh_config(known), accept_new_host_key=True).close()
    assert stat.S_IMODE(known.stat().st_mode) == 0o600
    assert stat.S_IMODE(known.parent.stat().st_mode) == 0o700


@needs_sshd
@pytest.mark.parametrize("accept_new", [False, True])
def test_a_revoked_key_is_refused_even_when_pinned(sshd: Callable[..., Server], tmp_path: Path,
                                                   accept_new: bool) -> None:
    server = sshd()
    kind, blob = server.host_line()
    known = tmp_path / "known_hosts"
    pinned = f"{server.known_name()} {kind} {blob}\n" if accept_new else ""
    known.write_text(f"{pinned}@revoked * {kind} {blob}\n")
    before = known.read_bytes()
    with pytest.raises(HostError, match=r"REVOKED") as info:
        opened(server.ssh_config(known), accept_new_host_key=accept_new)
    assert openssh_fingerprint(server.host_pub) in str(info.value)
    assert known.read_bytes() == before


@needs_sshd
@pytest.mark.parametrize("how", ["accept-new", "fingerprint", "neither"])
def test_a_changed_key_is_refused_whatever_the_flags(
        sshd: Callable[..., Server], tmp_path: Path, other_key: tuple[str, str, Path],
        how: str) -> None:
    server = sshd()
    kind, blob, _ = other_key
    known = tmp_path / "known_hosts"
    known.write_text(f"{server.known_name()} {kind} {blob}\n")
    before = known.read_bytes()
    options = {"accept-new": {"accept_new_host_key": True},
               "fingerprint": {"host_key_fingerprint": openssh_fingerprint(server.host_pub)},
               "neither": {}}[how]
    with pytest.raises(HostError, match="host key CHANGED") as info:
        opened(server.ssh_config(known), **options)
    assert openssh_fingerprint(server.host_pub) in str(info.value)
    assert known.read_bytes() == before


@needs_sshd
def test_host_key_fingerprint_must_match_then_pins(sshd: Callable[..., Server], tmp_path: Path,
                                                   other_key: tuple[str, str, Path]) -> None:
    server = sshd()
    known = tmp_path / "known_hosts"
    known.write_text("# mine\n")
    config = server.ssh_config(known)
    wrong = openssh_fingerprint(other_key[2])
    right = openssh_fingerprint(server.host_pub)
    with pytest.raises(HostError) as info:
        opened(config, host_key_fingerprint=wrong)
    assert wrong in str(info.value) and right in str(info.value)
    assert known.read_text() == "# mine\n"
    opened(config, host_key_fingerprint=right).close()
    kind, blob = server.host_line()
    assert known.read_text() == f"# mine\n{server.known_name()} {kind} {blob}\n"
    opened(config).close()
    # Known and matching known_hosts, yet not the key the user said: still refused.
    with pytest.raises(HostError, match=re.escape(wrong)):
        opened(config, host_key_fingerprint=wrong)


@needs_sshd
def test_the_key_type_known_hosts_holds_is_the_one_asked_for(sshd: Callable[..., Server],
                                                             tmp_path: Path) -> None:
    # The server has ed25519 and RSA keys; only its RSA key is pinned. Asking for ed25519
    # first (paramiko's own order) would look like a changed key.
    server = sshd(more_keys=("rsa",))
    kind, blob = (server.folder / "host_key_rsa.pub").read_text().split()[:2]
    known = tmp_path / "known_hosts"
    known.write_text(f"{server.known_name()} {kind} {blob}\n")
    host = opened(server.ssh_config(known))
    try:
        assert host.conn.transport.get_remote_server_key().get_base64() == blob
    finally:
        host.close()
    assert known.read_text() == f"{server.known_name()} {kind} {blob}\n"


@pytest.mark.parametrize("bad", ["SHA256:short", "MD5:ab:cd", "nonsense", "SHA256:" + "!" * 43])
def test_a_malformed_fingerprint_is_bad_input(tmp_path: Path, bad: str) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(f"Host target\n  UserKnownHostsFile {tmp_path}/known_hosts\n")
    with pytest.raises(UsageError, match="--host-key-fingerprint"):
        connect("target", config, host_key_fingerprint=bad)


def test_a_fingerprint_can_come_from_the_environment(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    from fabric import Config as FabricConfig
    from fabric import Connection

    from vedfin_ops.cli.output import remote

    monkeypatch.setenv("VEDFIN_HOST_KEY_FINGERPRINT", "SHA256:nope")
    config = tmp_path / "ssh_config"
    config.write_text(f"Host target\n  UserKnownHostsFile {tmp_path}/known_hosts\n")
    fabric_config = FabricConfig(runtime_ssh_path=str(config))
    fabric_config.load_ssh_config()
    with pytest.raises(UsageError, match="SHA256:nope"):
        remote(Connection("target", config=fabric_config))


def test_a_known_hosts_folder_is_bad_input(tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(f"Host target\n  UserKnownHostsFile {tmp_path}\n")
    with pytest.raises(UsageError, match=re.escape(str(tmp_path))):
        connect("target", config)


# --- ssh_config time values ----------------------------------------------------------------

@pytest.mark.parametrize(("text", "seconds"), [("15", 15), ("0", 0), ("10s", 10), ("1m", 60),
                                               ("2M", 120), ("1h30m", 5400), ("1d", 86400),
                                               ("1w", 604800), ("1m30", 90)])
def test_ssh_time_values(text: str, seconds: int) -> None:
    assert ssh_seconds("ServerAliveInterval", text) == seconds


@pytest.mark.parametrize("text", ["", "1x", "m", "-1", "1.5m", "1 m", "abc"])
def test_a_bad_ssh_time_value_names_the_option(text: str) -> None:
    with pytest.raises(UsageError, match="ServerAliveInterval"):
        ssh_seconds("ServerAliveInterval", text)


def test_server_alive_interval_in_minutes_is_read(tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(f"Host target\n  UserKnownHostsFile {tmp_path}/kh\n"
                      "  ServerAliveInterval 1m\n")
    assert host_module.keepalive_seconds(connect("target", config)) == 60
    config.write_text(f"Host target\n  UserKnownHostsFile {tmp_path}/kh\n"
                      "  ServerAliveInterval 1x\n")
    with pytest.raises(UsageError, match=r"ServerAliveInterval.*1x"):
        connect("target", config)


@needs_sshd
def test_a_connection_with_a_minutes_keepalive_runs(sshd: Callable[..., Server],
                                                    tmp_path: Path) -> None:
    server = sshd()
    known = tmp_path / "known_hosts"
    config = server.ssh_config(known, extra="  ServerAliveInterval 1m\n")
    host = opened(config, accept_new_host_key=True)
    try:
        assert host.run("echo hi", what="echo").strip() == "hi"
    finally:
        host.close()


# --- SFTP: modes, permission denied, no subsystem -----------------------------------------

def private(rel: str) -> bool:
    return rel.startswith("env/")


@needs_sshd
def test_put_tree_makes_env_0700_and_secret_files_0600(sshd: Callable[..., Server],
                                                      tmp_path: Path) -> None:
    server = sshd()
    config = server.ssh_config(tmp_path / "known_hosts")
    remote_dir = server.folder / "release"
    host = opened(config, accept_new_host_key=True)
    try:
        host.put_tree(str(remote_dir), {"env/api.env": "A=1\n", "stack.yml": "x: 1\n",
                                        "deep/er/file.txt": "y"}, private)
    finally:
        host.close()
    assert stat.S_IMODE((remote_dir / "env").stat().st_mode) == 0o700
    assert stat.S_IMODE((remote_dir / "env/api.env").stat().st_mode) == 0o600
    assert stat.S_IMODE((remote_dir / "stack.yml").stat().st_mode) == 0o640
    assert (remote_dir / "env/api.env").read_text() == "A=1\n"
    assert (remote_dir / "deep/er/file.txt").read_text() == "y"


@needs_sshd
def test_a_private_file_is_0600_from_the_open_itself(sshd: Callable[..., Server],
                                                    tmp_path: Path) -> None:
    # The sftp server's umask is 0 here: a file opened without a mode would be born 0666.
    server = sshd(subsystem="internal-sftp -u 0000")
    host = opened(server.ssh_config(tmp_path / "known_hosts"), accept_new_host_key=True)
    path = server.folder / "secret.env"
    try:
        handle = host.open_new(str(path), 0o600)
        try:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600  # before any chmod or byte
        finally:
            handle.close()
    finally:
        host.close()


@needs_sshd
def test_put_tree_permission_denied_names_the_path(sshd: Callable[..., Server],
                                                   tmp_path: Path) -> None:
    server = sshd()
    root_only = server.folder / "root-only"
    root_only.mkdir(mode=0o755)
    host = opened(server.ssh_config(tmp_path / "known_hosts", user="nobody"),
                  accept_new_host_key=True)
    try:
        with pytest.raises(RemoteError) as info:
            host.put_tree(f"{root_only}/release", {"stack.yml": "x"}, private)
        message = str(info.value)
        assert "permission denied" in message and f"{root_only}/release" in message
        assert not message.startswith("error:")
        writable = server.folder / "open"
        writable.mkdir(mode=0o777)
        writable.chmod(0o777)
        host.put_tree(str(writable / "tmp"), {"stack.yml": "x"}, private)
        refused = re.escape(f"{root_only}/current") + ".*permission denied"
        with pytest.raises(RemoteError, match=refused):
            host.rename(str(writable / "tmp"), f"{root_only}/current")
    finally:
        host.close()


@needs_sshd
def test_a_host_without_sftp_says_so(sshd: Callable[..., Server], tmp_path: Path) -> None:
    server = sshd(subsystem=None)
    host = opened(server.ssh_config(tmp_path / "known_hosts"), accept_new_host_key=True)
    try:
        assert host.run("echo still-runs", what="echo").strip() == "still-runs"
        with pytest.raises(CheckFailed, match=r"no SFTP subsystem.*Subsystem sftp") as info:
            host.put_tree(str(server.folder / "release"), {"stack.yml": "x"}, private)
        assert "\n" not in str(info.value)
    finally:
        host.close()


@needs_sshd
def test_a_failed_command_error_has_no_prefix(sshd: Callable[..., Server],
                                             tmp_path: Path) -> None:
    server = sshd()
    host = opened(server.ssh_config(tmp_path / "known_hosts"), accept_new_host_key=True)
    host.secrets.append("hunter22")
    try:
        with pytest.raises(RemoteError) as info:
            host.run("echo 'postgresql://app:hunter22x@db/x broke' >&2; exit 3", what="step")
        message = str(info.value)
        assert message.startswith("step failed on root@127.0.0.1")
        assert "hunter22" not in message and "postgresql://app:***@db/x" in message
    finally:
        host.close()



@pytest.mark.parametrize("alias", ["*", "node1,evil", "a b", "node?"])
def test_a_host_key_alias_with_a_wildcard_is_bad_input(tmp_path: Path, alias: str) -> None:
    """Pinned verbatim, such an alias would be a known_hosts line for other hosts too."""
    from vedfin_ops.remote.host import filed_under

    config = tmp_path / "ssh_config"
    config.write_text(f"Host target\n  HostName 127.0.0.1\n  HostKeyAlias {alias}\n")
    with pytest.raises(UsageError, match="HostKeyAlias"):
        filed_under(connect("target", config))
