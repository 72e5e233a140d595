"""PostgreSQL + pgvector from the PyPI package pgserver, run from a copy of its binaries.

pgserver's own `get_server`, run as root, makes every parent folder of its data directory
readable by everyone up to `/` (its `ensure_prefix_permissions`), a 0700 /root included, so
that its server user can reach binaries installed under root's home. The tests must never
widen the machine: the binaries and their libraries are copied into the test's own temp folder
instead (they find their libraries and share files relative to themselves, as in the sandbox's
postgres image) and run as Debian's `postgres` user there, on a Unix socket of that folder.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sandbox.images import pgserver_paths

from .conftest import unavailable

USER = "postgres"  # Debian's postgresql package makes it; postgres refuses to run as root


def _as_user(*cmd: str) -> None:
    # No pipes: the server pg_ctl forks would hold them open and hang the wait.
    subprocess.run(["runuser", "-u", USER, "--", *cmd], check=True, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)


@contextmanager
def pgvector_server(folder: Path) -> Iterator[tuple[Path, str]]:
    """(psql, uri) of a running server whose every file lives under `folder` (0755, ours)."""
    try:
        pginstall, libs = pgserver_paths()
    except Exception as exc:
        unavailable(f"pgserver: {exc}")
    if shutil.which("runuser") is None:
        unavailable("runuser (util-linux) is not installed")
    try:
        shutil.chown(folder, USER)
    except LookupError:
        unavailable(f"no {USER} user (Debian's postgresql package makes it)")
    home = folder / "pgserver"
    shutil.copytree(pginstall, home / "pginstall", symlinks=True)
    shutil.copytree(libs, folder / "pgserver.libs", symlinks=True)
    data, sock = folder / "data", folder / "sock"
    sock.mkdir()
    shutil.chown(sock, USER)
    bin_dir = home / "pginstall" / "bin"
    _as_user(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust")
    _as_user(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"),
             "-o", f"-c listen_addresses='' -k {sock}", "-w", "start")
    try:
        yield bin_dir / "psql", f"postgresql://postgres@/postgres?host={sock}"
    finally:
        _as_user(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
