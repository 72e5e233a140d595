"""The engine's containers, images and volumes: one-off migration containers, image pruning,
the probe of a data volume before it is adopted."""

from __future__ import annotations

from vedfin_ops.remote.quoting import sh, sh_join

STACK_LABEL = "com.docker.stack.namespace"
SERVICE_LABEL = "com.docker.swarm.service.name"
MIGRATE_LABEL = "vedfin.migrate"


def migrate(image: str, network: str, env_file: str, command: str, name: str,
            env: str, label: str = MIGRATE_LABEL) -> str:
    """A one-off container of the NEW image on the env's network, removed when done; labelled
    with the env so an interrupted run can stop it and the next deploy can see it (verify's
    read-only status command has a label of its own: it must not hold a deploy back)."""
    return (f"docker run --rm --name {sh(name)} --label {sh(label + '=' + env)} "
            f"--network {sh(network)} --env-file {sh(env_file)} --entrypoint /bin/sh "
            f"{sh(image)} -c {sh(command)}")


def migrations_running(env: str) -> str:
    return (f"docker ps --format '{{{{.Names}}}}' "
            f"--filter {sh('label=' + MIGRATE_LABEL + '=' + env)}")


def stop_migrations(env: str) -> str:
    """Stop the env's one-off migration containers (an interrupted migrate leaves them)."""
    return (f"ids=$(docker ps -q --filter {sh('label=' + MIGRATE_LABEL + '=' + env)}); "
            f"[ -z \"$ids\" ] || docker rm -f $ids >/dev/null")


def remove_container(name: str) -> str:
    """A container stopped and removed, whatever state it is in (or gone already)."""
    return f"docker rm -f {sh(name)} >/dev/null 2>&1 || true"


def stop_container(name: str, grace: int = 60) -> str:
    """A container asked to stop (its image's stop signal: a postgres shuts down cleanly),
    killed after `grace` seconds, then removed; nothing when there is none."""
    return (f"docker stop -t {int(grace)} {sh(name)} >/dev/null 2>&1; "
            f"{remove_container(name)}")


ADOPT_LABEL = "vedfin.adopt-backup"
PGDATA = "/var/lib/postgresql/data"  # where postgres images keep their data (the shared stack's)


def adoption_server(name: str, volume: str, image: str, user: str, wait: int = 300) -> str:
    """A postgres of `image` on an adopted data volume, with no network, only to dump its
    databases before the shared stack moves onto the volume; waits (up to `wait` seconds: the
    data of a server that was killed is recovered first) until it answers on its socket, and
    fails with the container's last log lines when it stops or never answers."""
    n = sh(name)
    running = f"docker inspect -f '{{{{.State.Running}}}}' {n} 2>/dev/null"
    return (f"docker run -d --name {n} --network none --label {sh(ADOPT_LABEL)} "
            f"-v {sh(volume + ':' + PGDATA)} {sh(image)} >/dev/null && i=0 && "
            f"until docker exec {n} pg_isready -q -U {sh(user)} >/dev/null 2>&1; do "
            f"i=$((i + 1)); if [ \"$i\" -ge {int(wait)} ] || [ \"$({running})\" != true ]; then "
            f"docker logs --tail 5 {n} >&2 2>&1; exit 1; fi; sleep 1; done")


_VOLUME_SAYS = ('echo "data $(cat /adopt/PG_VERSION 2>/dev/null)"; '
                'echo "entries $(ls -A /adopt | head -n 5 | tr "\\n" " ")"; '
                'echo "image $(postgres --version 2>/dev/null)"')


def volume_probe(volume: str, image: str) -> str:
    """Before adopting an existing data volume: does it exist, which containers use it, which
    PostgreSQL major its data directory holds, and which the image runs (read-only mount, no
    network)."""
    v = sh(volume)
    users = ("'user {{.Name}} {{index .Config.Labels "
             "\"com.docker.swarm.service.name\"}}'")
    mounts = ("'{{.Spec.Name}}{{range .Spec.TaskTemplate.ContainerSpec.Mounts}} "
              "{{.Source}}{{end}}'")
    return (f"if ! docker volume inspect -- {v} >/dev/null 2>&1; then echo missing; exit 0; "
            f"fi; for c in $(docker ps -aq --filter volume={v}); do docker inspect --format "
            f"{users} \"$c\"; done; "
            f"for s in $(docker service ls -q 2>/dev/null); do docker service inspect "
            f"--format {mounts} \"$s\"; done | awk -v v={v} "
            f"'{{for (i = 2; i <= NF; i++) if ($i == v) print \"service \" $1}}'; "
            f"docker run --rm --network none --user 0 --entrypoint sh "
            f"-v {sh(volume + ':/adopt:ro')} {sh(image)} -c {sh(_VOLUME_SAYS)}")


def image_inventory(base: str, repos: list[str]) -> str:
    """Every digest a release of any env on the host still names (`keep ...`), and the
    engine's images of `repos` (`image REPO DIGEST ID`), for pruning the rest."""
    if not repos:  # no filter would list every image on the host
        raise ValueError("image_inventory needs at least one repository")
    filters = " ".join(f"--filter reference={sh(r)}" for r in repos)
    return (f"grep -rhoE 'sha256:[0-9a-f]{{64}}' {sh(base)}/*/releases/*/release.json "
            f"2>/dev/null | sort -u | sed 's/^/keep /'; "
            f"docker image ls --digests --no-trunc {filters} "
            f"--format 'image {{{{.Repository}}}} {{{{.Digest}}}} {{{{.ID}}}}'")


def remove_images(ids: list[str]) -> str:
    """Images one by one, never forced: one still used by a container (or named by another
    repository) stays, and is not an error of the prune."""
    return (f"for i in {sh_join(ids)}; do docker image rm -- \"$i\" >/dev/null 2>&1 && "
            f"echo removed; done; true")
