"""How one deploy may depart from the safe way, as `deploy()` and `Deploy` take it.

Each option the CLI offers as a flag of `deploy --env E` / `deploy.<env>` (`--skip-preflight`,
`--force`, ...). The departures that take a check or a safety net away are said on the
terminal and recorded, so an audit shows them: a skipped preflight, a skipped backup and a
forced capacity gate each get an audit line, and the release's record keeps
`skip_preflight`, `force` and why it has no backup. `allow_shared` and `full_replicas` only
widen what the deploy may do (the shared stack rolled from another env, the configured
replicas kept off-hours) and leave no record of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vedfin_ops.deploy.build import BuildFirst


@dataclass(frozen=True)
class DeployOptions:
    skip_preflight: bool = False  # no pre-deployment checklist (audit: preflight skipped)
    force: bool = False  # past the capacity gate (audit: capacity-gate forced)
    # change the shared stack (postgres, redis, edge) from an env that does not own it
    # (environments.<env>.ownsShared)
    allow_shared: bool = False
    no_backup: bool = False  # no database backup first (audit: backup skipped)
    full_replicas: bool = False  # inside the off-hours window, keep the configured replicas
    # build and push the env's images from the config's work tree first (`--build`); the
    # tag defaults to its commit
    build: BuildFirst | None = None
    # a request the zero-downtime probe saw fail fails the deploy (verify.requireZeroDowntime)
    require_zero_downtime: bool = False


SAFE = DeployOptions()  # no departure: every check, a backup first, the shared stack's rules
