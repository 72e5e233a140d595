#!/usr/bin/env bash
# How the files beside this one were recorded: a real ufw (Debian 12's 0.36.2), run inside a
# throw-away network namespace so the machine's own firewall is never touched. Run as root.
set -euo pipefail
out=$(cd "$(dirname "$0")" && pwd)
ip netns add ufwrec
trap 'ip netns del ufwrec' EXIT
ip netns exec ufwrec sh -c '
  ufw status > "$0/inactive.txt"
  ufw allow 22/tcp >/dev/null; ufw allow 80/tcp >/dev/null; ufw allow 443/tcp >/dev/null
  ufw --force enable >/dev/null
  ufw status > "$0/runbook.txt"
  ufw allow 3000/tcp >/dev/null
  ufw status > "$0/port-3000-open.txt"
  ufw delete allow 3000/tcp >/dev/null; ufw delete allow 443/tcp >/dev/null
  ufw status > "$0/no-443.txt"
  ufw --force reset >/dev/null
' "$out"
