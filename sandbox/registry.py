"""A real image registry on 127.0.0.1 for the sandbox and the tests: Debian's `docker-registry`
(Distribution 2.8) with htpasswd (bcrypt) auth, behind TLS from a CA this module makes.

The CA and the server certificate are made with `cryptography` (already a dependency of
paramiko); the password never leaves the files this writes (0600) and the caller's memory.
"""

from __future__ import annotations

import datetime
import ipaddress
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import bcrypt

from sandbox.local import SandboxError, started_process, terminate
from vedfin_ops.config.secret_store import write_private

BINARY = "docker-registry"


@dataclass(frozen=True)
class RegistryServer:
    server: str  # host:port, as images name it
    username: str
    password: str
    ca: Path  # PEM of the CA that signed the server's certificate
    folder: Path
    pid: int

    def stop(self) -> None:
        terminate(self.pid)


def cert_files(folder: Path) -> tuple[Path, Path, Path]:
    """(ca.crt, server.crt, server.key) in `folder`, where `make_ca_and_cert` writes them."""
    return folder / "ca.crt", folder / "server.crt", folder / "server.key"


def make_ca_and_cert(folder: Path, host: str = "127.0.0.1",
                     also: tuple[str, ...] = ()) -> tuple[Path, Path, Path]:
    """(ca.crt, server.crt, server.key): a CA valid 30 days and a server certificate for
    `host` and `also` (IP or DNS SANs) it signs."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vedfin sandbox registry CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                       crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False,
                                       decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for name in (host, *also):
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    paths = cert_files(folder)
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    write_private(paths[2], key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()).decode())
    return paths


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start(folder: Path, *, port: int = 0, username: str = "vedfin",
          password: str | None = None) -> RegistryServer:
    """Start a registry serving TLS on 127.0.0.1:`port` (0: a free one), storing under
    `folder`; returns once it answers."""
    if shutil.which(BINARY) is None:
        raise SandboxError(f"{BINARY} is not installed (apt-get install docker-registry)")
    folder.mkdir(parents=True, exist_ok=True)
    password = password or secrets.token_urlsafe(18)
    port = port or free_port()
    tls = folder / "tls"
    paths = cert_files(tls)
    # Kept across restarts (the engine trusts this CA by its file in certs.d) while both
    # certificates have a day left
    ca, cert, key = paths if still_valid(paths[:2]) else make_ca_and_cert(tls)
    htpasswd = folder / "htpasswd"
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode()
    write_private(htpasswd, f"{username}:{hashed}\n")
    config = folder / "config.yml"
    config.write_text(f"""version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {folder / 'data'}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
  tls:
    certificate: {cert}
    key: {key}
auth:
  htpasswd:
    realm: vedfin-sandbox
    path: {htpasswd}
""")
    log = (folder / "registry.log").open("ab")
    proc = subprocess.Popen([BINARY, "serve", str(config)], stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    (folder / "registry.pid").write_text(str(proc.pid))
    server = RegistryServer(f"127.0.0.1:{port}", username, password, ca, folder, proc.pid)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SandboxError(f"{BINARY} exited ({proc.returncode}); see "
                               f"{folder / 'registry.log'}")
        if _answers(server):
            return server
        time.sleep(0.1)
    server.stop()
    raise SandboxError(f"{BINARY} did not answer on 127.0.0.1:{port} within 20 s")


def still_valid(certs: tuple[Path, ...]) -> bool:
    from cryptography import x509

    soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)
    try:
        return all(x509.load_pem_x509_certificate(p.read_bytes()).not_valid_after_utc > soon
                   for p in certs)
    except (OSError, ValueError):
        return False


def _answers(server: RegistryServer) -> bool:
    """Our registry, not just a listener: TLS that our CA signed, and the v2 API asking for
    a login."""
    import requests

    try:
        response = requests.get(f"https://{server.server}/v2/", verify=str(server.ca),
                                timeout=1)
    except requests.RequestException:
        return False
    return response.status_code == 401 and "Docker-Distribution-Api-Version" in \
        response.headers


def running(folder: Path) -> int | None:
    """The pid of the registry started from `folder`, if it still runs."""
    return started_process(folder / "registry.pid", [BINARY, "serve",
                                                      str(folder / "config.yml")])


def stop(folder: Path) -> None:
    pid = running(folder)
    if pid is not None:
        terminate(pid)
    (folder / "registry.pid").unlink(missing_ok=True)


CERTS_D = Path("/etc/docker/certs.d")


def trust(server: str, ca: Path) -> Path:
    """The engine trusts the registry's CA for `server` (Docker reads certs.d per pull)."""
    target = CERTS_D / server / "ca.crt"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ca, target)
    return target


def untrust(server: str) -> None:
    shutil.rmtree(CERTS_D / server, ignore_errors=True)
