"""Which env plays production's part, from `environments.<env>` in the config.

`ownsShared`: its deploys may change the shared stack (postgres, redis, the edge) and apply
the host's alarms; a deploy of any other env changes the shared stack only with
--allow-shared. `protected`: a restore over its database needs --yes, taking it below one
replica needs --force, and capacity-report never offers to pause it.

Unset, each key is true for the env named `production` and false for the others: the
behaviour from before the keys existed, so a config that names its envs production, staging
and dev needs neither.
"""

from __future__ import annotations

from vedfin_ops.config.model import Config
from vedfin_ops.errors import UsageError

PRODUCTION = "production"  # the env that has both roles when the config does not say


def owns_shared(config: Config, env: str) -> bool:
    value = config.environments[env].owns_shared
    return env == PRODUCTION if value is None else value


def shared_owner(config: Config) -> str | None:
    """The one env that owns the shared stack, or None when no env does (then every deploy
    that changes it needs --allow-shared). Two owners are bad input."""
    owners = [env for env in config.environments if owns_shared(config, env)]
    if len(owners) > 1:
        raise UsageError(f"{config.source}: environments: ownsShared is true for "
                         f"{' and '.join(owners)}; one env at most owns the shared stack "
                         f"(postgres, redis, edge){_default_note(config, owners)}")
    return owners[0] if owners else None


def protected(config: Config, env: str) -> bool:
    value = config.environments[env].protected
    return env == PRODUCTION if value is None else value


def protected_envs(config: Config) -> list[str]:
    """The protected envs, in the config's order."""
    return [env for env in config.environments if protected(config, env)]


def _default_note(config: Config, owners: list[str]) -> str:
    """The owner the user never named: production owns it by default."""
    if PRODUCTION in owners and config.environments[PRODUCTION].owns_shared is None:
        return (f"; {PRODUCTION} owns it by default: set environments.{PRODUCTION}."
                f"ownsShared: false")
    return ""
