"""The sandbox's SSH door: its own sshd on 127.0.0.1, its own keys, a pinned host key.

The system's sshd and ~/.ssh are never touched; everything lives under `.sandbox/` and the
deploy user's home, so `sandbox.down` can take all of it away again.
"""

from __future__ import annotations

import grp
import os
import pwd
import socket
import time
from pathlib import Path

from sandbox.engine import apt_install
from sandbox.local import SandboxError, alive, port_answers, run, terminate

SSHD = Path("/usr/sbin/sshd")


def free_port(preferred: int) -> int:
    for port in range(preferred, preferred + 100):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise SandboxError(f"no free port in {preferred}-{preferred + 99} on 127.0.0.1")


def ensure_user(user: str) -> bool:
    """A non-root deploy user in the docker group; True if we created it."""
    created = False
    try:
        pwd.getpwnam(user)
    except KeyError:
        run(["useradd", "--create-home", "--shell", "/bin/bash", "--comment",
             "vedfin-ops sandbox deploy user", user])
        created = True
    try:
        grp.getgrnam("docker")
    except KeyError:
        run(["groupadd", "--system", "docker"])
    run(["usermod", "--append", "--groups", "docker", user])
    # A locked account ("!" password) is refused by sshd even with a good key; "*" is not
    # locked yet has no password that could ever match.
    run(["usermod", "--password", "*", user])
    return created


def remove_user(user: str) -> None:
    try:
        pwd.getpwnam(user)
    except KeyError:
        return
    run(["pkill", "-u", user], check=False)
    run(["userdel", "--remove", user], check=False)


def keygen(path: Path, comment: str) -> None:
    if not path.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])


def authorize(user: str, public_key: Path) -> None:
    info = pwd.getpwnam(user)
    ssh_dir = Path(info.pw_dir) / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    keys = ssh_dir / "authorized_keys"
    key = public_key.read_text().strip()
    lines = keys.read_text().splitlines() if keys.exists() else []
    if key not in lines:  # another checkout's sandbox may share this user: keep its key
        keys.write_text("\n".join([*lines, key]) + "\n")
    keys.chmod(0o600)
    for path in (ssh_dir, keys):
        os.chown(path, info.pw_uid, info.pw_gid)


SSHD_CONFIG = """# vedfin-ops sandbox sshd: loopback only, keys only, one user.
Port {port}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile {pid_file}
AllowUsers {user}
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin no
UsePAM no
StrictModes yes
AuthorizedKeysFile .ssh/authorized_keys
MaxStartups 50:30:100
Subsystem sftp internal-sftp
"""

SSH_CONFIG = """# vedfin-ops sandbox: fab -S {workdir}/ssh_config -H sandbox TASK
Host sandbox
  HostName 127.0.0.1
  Port {port}
  User {user}
  IdentityFile {workdir}/id_ed25519
  IdentitiesOnly yes
  UserKnownHostsFile {workdir}/known_hosts
  StrictHostKeyChecking yes
  ServerAliveInterval 15
"""


def running(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return None
    return pid if alive(pid) else None


def start(workdir: Path, user: str, preferred_port: int = 2222) -> int:
    """Start (or keep) the sandbox sshd; returns its port."""
    if not SSHD.exists():
        apt_install("openssh-server")
    host_key, client_key = workdir / "ssh_host_ed25519_key", workdir / "id_ed25519"
    keygen(host_key, "vedfin-sandbox-host")
    keygen(client_key, "vedfin-sandbox-deployer")
    authorize(user, client_key.with_suffix(".pub"))
    pid_file = workdir / "sshd.pid"
    port_file = workdir / "sshd.port"
    if running(pid_file) and port_file.exists():
        port = int(port_file.read_text())
    else:
        port = free_port(preferred_port)
        config = workdir / "sshd_config"
        config.write_text(SSHD_CONFIG.format(port=port, host_key=host_key, pid_file=pid_file,
                                             user=user))
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir
        run([str(SSHD), "-t", "-f", str(config)])
        run([str(SSHD), "-f", str(config)])
        port_file.write_text(str(port))
        _wait_listening(port)
    host_pub = host_key.with_suffix(".pub").read_text().split()
    # Pinned under the alias and the address, so both `-H sandbox` and plain ssh check it.
    (workdir / "known_hosts").write_text(
        f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n"
        f"[sandbox]:{port} {host_pub[0]} {host_pub[1]}\n")
    (workdir / "ssh_config").write_text(SSH_CONFIG.format(workdir=workdir, port=port,
                                                          user=user))
    return port


def _wait_listening(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if port_answers(port):
            return
        time.sleep(0.1)
    raise SandboxError(f"sandbox sshd is not listening on 127.0.0.1:{port}")


def stop(workdir: Path) -> None:
    pid = running(workdir / "sshd.pid")
    if pid:
        terminate(pid)


def unauthorize(user: str, public_key: Path) -> None:
    """Take this sandbox's key out of a user it did not create."""
    try:
        keys = Path(pwd.getpwnam(user).pw_dir) / ".ssh" / "authorized_keys"
    except KeyError:
        return
    if keys.exists() and public_key.exists():
        key = public_key.read_text().strip()
        keys.write_text("".join(f"{line}\n" for line in keys.read_text().splitlines()
                                if line.strip() != key))
