"""`host.prepare`: a bare VPS to the runbook's prerequisites (`prepare.py`, its ordered steps
first), each step a read-only check (`remote/commands/host.py` probes, `judge.py` and
`firewall.py` decide) and an idempotent apply (`steps.py`); `keys.py` finds the operator's
public key, `kuma.py` makes Uptime Kuma's admin account."""
