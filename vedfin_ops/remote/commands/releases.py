"""What a deploy, `status` and a put-back read of the env's releases, each in one round
trip."""

from __future__ import annotations

from vedfin_ops.remote.commands.engine import migrations_running
from vedfin_ops.remote.commands.files import write_text
from vedfin_ops.remote.quoting import sh


def release_listing(releases_dir: str, current_link: str, shared_hash_file: str) -> str:
    """Each release with its state, where `current` points and the shared stack's hash: one
    round trip. Lines: `R <id> <state>`, `current <target>`, `shared <hash>`."""
    return (f"cd -- {sh(releases_dir)} 2>/dev/null && for d in */; do [ -d \"$d\" ] || "
            f"continue; d=${{d%/}}; printf 'R %s %s\\n' \"$d\" "
            f"\"$(cat -- \"$d/state\" 2>/dev/null || echo unknown)\"; done; "
            f"printf 'current %s\\n' \"$(readlink -- {sh(current_link)} 2>/dev/null)\"; "
            f"printf 'shared %s\\n' \"$(cat -- {sh(shared_hash_file)} 2>/dev/null)\"")


def release_records(releases_dir: str, base: str) -> str:
    """What `status` shows of every release, in one round trip: per release a `rec <id>` line,
    then `rec.state`, `rec.json` (its release.json on one line) and `rec.reason` (the reason
    file, newlines as spaces; empty when there is none). First a `base yes|no` line: whether
    the base dir exists at all (a wrong --config names one that does not)."""
    return (f"if [ -d {sh(base)} ]; then echo 'base yes'; else echo 'base no'; fi; "
            f"( cd -- {sh(releases_dir)} 2>/dev/null && for d in */; do [ -d \"$d\" ] || "
            f"continue; d=${{d%/}}; printf 'rec %s\\n' \"$d\"; "
            f"printf 'rec.state %s\\n' \"$(tr '\\n' ' ' 2>/dev/null < \"$d/state\")\"; "
            f"printf 'rec.json %s\\n' \"$(tr -d '\\n' 2>/dev/null < \"$d/release.json\")\"; "
            f"printf 'rec.reason %s\\n' \"$(tr '\\n' ' ' 2>/dev/null < \"$d/reason\")\"; "
            f"done ); true")


def status_state(releases_dir: str, current_link: str, shared_hash_file: str, env: str,
                 base: str) -> str:
    """`status` in one round trip: every release's record, then `env_state`."""
    return (f"{release_records(releases_dir, base)}; "
            f"{env_state(releases_dir, current_link, shared_hash_file, env)}")


def env_state(releases_dir: str, current_link: str, shared_hash_file: str, env: str) -> str:
    """`release_listing`, plus what `current` recorded (its release.json and the engine's
    task templates after its rollout, each on one line) and the env's migration containers
    still running: everything a deploy decides from, in one round trip."""
    cur = sh(current_link)
    return (f"{release_listing(releases_dir, current_link, shared_hash_file)}; "
            f"printf 'meta %s\\n' \"$(tr -d '\\n' 2>/dev/null < {cur}/release.json)\"; "
            f"printf 'engine %s\\n' \"$(tr -d '\\n' 2>/dev/null < {cur}/engine.json)\"; "
            f"printf 'migrating %s\\n' \"$({migrations_running(env)} 2>/dev/null "
            f"| tr '\\n' ' ')\"")


def write_state(release_dir: str, state: str) -> str:
    return write_text(f"{release_dir}/state", state)


def mark_release(release_dir: str, state: str, reason: str) -> str:
    """The release's state (`failed`, `interrupted`, ...) and, beside it, why."""
    return (f"{write_state(release_dir, state)} && "
            f"{write_text(release_dir + '/reason', reason)}")


def clean_partial_uploads(releases_dir: str) -> str:
    """Uploads cut off mid-way leave `.tmp-*` folders; only a lock holder calls this."""
    return f"rm -rf -- {sh(releases_dir)}/.tmp-*"
