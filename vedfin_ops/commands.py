"""Pure builders of the remote shell commands: strings in, strings out, all quoting via `sh`.

Nothing here runs anything, so every command can be unit-tested as the exact string the host
will see, and a value from the config can never become shell syntax.
"""

from __future__ import annotations

from .quoting import sh, sh_join

STACK_LABEL = "com.docker.stack.namespace"
SERVICE_LABEL = "com.docker.swarm.service.name"


def mkdir_p(*paths: str, mode: str = "750") -> str:
    return f"mkdir -p -m {sh(mode)} -- {sh_join(paths)}"


def lock_acquire(lock_dir: str, holder_json: str) -> str:
    """`mkdir` is atomic: of two deploys exactly one creates the directory."""
    return (f"mkdir -- {sh(lock_dir)} 2>/dev/null && printf '%s\\n' {sh(holder_json)} > "
            f"{sh(lock_dir + '/holder')} && echo acquired || "
            f"{{ echo held; cat -- {sh(lock_dir + '/holder')} 2>/dev/null; }}")


def lock_release(lock_dir: str) -> str:
    return f"rm -rf -- {sh(lock_dir)}"


def audit_append(log: str, line: str) -> str:
    """One short `>>` write with O_APPEND: lines from concurrent writers never interleave."""
    return f"printf '%s\\n' {sh(line)} >> {sh(log)}"


def tail(path: str, lines: int) -> str:
    return f"tail -n {int(lines)} -- {sh(path)} 2>/dev/null || true"


def read_file(path: str) -> str:
    return f"cat -- {sh(path)} 2>/dev/null || true"


def swap_symlink(target: str, link: str) -> str:
    """Point `link` at `target` atomically: a new link, then rename(2) over the old one."""
    tmp = f"{link}.new"
    return f"ln -sfn -- {sh(target)} {sh(tmp)} && mv -Tf -- {sh(tmp)} {sh(link)}"


def release_listing(releases_dir: str, current_link: str, shared_hash_file: str) -> str:
    """Each release with its state, where `current` points and the shared stack's hash: one
    round trip. Lines: `R <id> <state>`, `current <target>`, `shared <hash>`."""
    return (f"cd -- {sh(releases_dir)} 2>/dev/null && for d in */; do [ -d \"$d\" ] || "
            f"continue; d=${{d%/}}; printf 'R %s %s\\n' \"$d\" "
            f"\"$(cat -- \"$d/state\" 2>/dev/null || echo unknown)\"; done; "
            f"printf 'current %s\\n' \"$(readlink -- {sh(current_link)} 2>/dev/null)\"; "
            f"printf 'shared %s\\n' \"$(cat -- {sh(shared_hash_file)} 2>/dev/null)\"")


def write_text(path: str, text: str) -> str:
    return f"printf '%s\\n' {sh(text)} > {sh(path)}"


def write_state(release_dir: str, state: str) -> str:
    return write_text(f"{release_dir}/state", state)


def clean_partial_uploads(releases_dir: str) -> str:
    """Uploads cut off mid-way leave `.tmp-*` folders; only a lock holder calls this."""
    return f"rm -rf -- {sh(releases_dir)}/.tmp-*"


def remove_dirs(paths: list[str]) -> str:
    return f"rm -rf -- {sh_join(paths)}" if paths else "true"


def stack_deploy(stack_file: str, stack: str) -> str:
    """`--resolve-image never`: images are local or already pinned; no registry round trip."""
    return (f"docker stack deploy --resolve-image never --prune -c {sh(stack_file)} "
            f"{sh(stack)}")


def stack_services(stack: str) -> str:
    return (f"docker service ls -q --filter {sh('label=' + STACK_LABEL + '=' + stack)}")


def snapshot(stacks: list[str]) -> str:
    """Every service of the stacks as one JSON array, plus the running tasks of each.

    One command per poll: the spec (with UpdateStatus and Version) from `service inspect`,
    then a line per task that should run: `TASK <service> <image> <state>`.
    """
    return (
        f"ids=$(for f in {' '.join(sh(s) for s in stacks)}; do docker service ls -q "
        f"--filter label={STACK_LABEL}=\"$f\"; done); "
        f"if [ -n \"$ids\" ]; then docker service inspect $ids; else echo '[]'; fi; "
        f"echo '--TASKS--'; "
        f"docker ps --no-trunc --filter label={STACK_LABEL} --format "
        f"'{{{{.Label \"{SERVICE_LABEL}\"}}}} {{{{.Image}}}} {{{{.State}}}} {{{{.Status}}}}'"
    )


def task_errors(service: str) -> str:
    """Why the engine's tasks of a service failed, newest first (the engine's own words)."""
    return (f"docker service ps --no-trunc --format '{{{{.Image}}}} {{{{.Error}}}}' "
            f"{sh(service)} | grep -v ' $' | head -n 3")


def postgres_container(service: str) -> str:
    return (f"docker ps -q --filter {sh('label=' + SERVICE_LABEL + '=' + service)} "
            f"--filter health=healthy | head -n 1")


def psql(container: str, user: str, database: str = "postgres", extra: str = "") -> str:
    return (f"docker exec -i {sh(container)} psql -X -v ON_ERROR_STOP=1 -U {sh(user)} "
            f"-d {sh(database)}{' ' + extra if extra else ''}")


def db_inventory(container: str, user: str) -> str:
    """One psql session over every database (the SQL from `db_init.inventory_sql` on stdin):
    errors do not stop it, so a missing database just prints no line."""
    return (f"docker exec -i {sh(container)} psql -X -At -v ON_ERROR_STOP=0 -U {sh(user)} "
            f"-d postgres 2>&1")


def psql_file(container: str, user: str, sql_file: str) -> str:
    return f"{psql(container, user)} < {sh(sql_file)}"


def migrate(image: str, network: str, env_file: str, command: str, name: str) -> str:
    """A one-off container of the NEW image on the env's network, removed when done."""
    return (f"docker run --rm --name {sh(name)} --network {sh(network)} "
            f"--env-file {sh(env_file)} --entrypoint /bin/sh {sh(image)} -c {sh(command)}")


def image_present(image: str) -> str:
    return f"docker image inspect --format '{{{{.Id}}}}' {sh(image)} >/dev/null 2>&1"


def scale_services(wanted: dict[str, int]) -> str:
    """One command for every service: `docker service scale --detach a=1 b=1`."""
    return "docker service scale --detach " + " ".join(
        sh(f"{name}={count}") for name, count in sorted(wanted.items()))


def published_ports() -> str:
    return "docker ps --format '{{.Names}} {{.Ports}}'"
