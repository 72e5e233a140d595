#!/usr/bin/env bash
# How the files beside this one were recorded: a real ufw (Debian 12's 0.36.2,
# `apt-get install ufw`), run inside a throw-away network namespace so the machine's own
# firewall is never touched, and inside a private mount namespace over copies of /etc/ufw and
# /etc/default/ufw so its configuration files are not touched either. Run as root.
#
# Each file is what preflight's probe reads: `ufw status verbose` (as root), except
# not-root.txt (the same command as an unprivileged user). sudo-password.txt is not recorded
# here (no sudo on the recording machine): it is sudo's documented message for `sudo -n` when
# a password would be needed; see README.md beside this file.
set -euo pipefail
out=$(cd "$(dirname "$0")" && pwd)
ns=ufwrec
tmp=$(mktemp -d)
ip netns add "$ns"
trap 'ip netns del "$ns"; rm -rf "$tmp"' EXIT
cp -a /etc/ufw "$tmp/ufw"
cp -a /etc/default/ufw "$tmp/default-ufw"
ip netns exec "$ns" unshare --mount --propagation private sh -eu -c '
  out=$1 tmp=$2
  mount --bind "$tmp/ufw" /etc/ufw
  mount --bind "$tmp/default-ufw" /etc/default/ufw
  st() { ufw status verbose > "$out/$1.txt"; }
  q() { ufw "$@" >/dev/null; }
  st inactive
  setpriv --reuid=65534 --regid=65534 --clear-groups ufw status verbose \
    > "$out/not-root.txt" 2>&1 || true
  q allow 22/tcp; q allow 80/tcp; q allow 443/tcp
  q --force enable
  st runbook
  q allow 3000/tcp; st port-3000-open; q delete allow 3000/tcp
  q allow 3000:3010/tcp; st range-3000; q delete allow 3000:3010/tcp
  q allow 3000/udp; st udp-3000; q delete allow 3000/udp
  q allow from 203.0.113.7; st all-from-one-address; q delete allow from 203.0.113.7
  q default allow incoming; st default-allow; q default deny incoming
  q delete allow 443/tcp; st no-443
  q --force reset
  q allow OpenSSH; q allow 80,443/tcp; q --force enable
  st app-and-list
  q --force reset
  q limit 22/tcp; q allow 80,443/tcp; q --force enable
  st limit-and-list
  q --force reset
  q allow 22/tcp; q allow 80,443/tcp; q deny 3000/tcp; q allow 3000:3010/tcp; q --force enable
  st deny-before-range
  q --force reset
' sh "$out" "$tmp"
