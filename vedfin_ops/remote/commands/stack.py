"""Stacks and services: deploy, the registry login the engine pulls with, replicas, restarts,
why tasks failed, and the health probe a rendered stack gives an app."""

from __future__ import annotations

from vedfin_ops.remote.command import Command, Raw, Secret
from vedfin_ops.remote.quoting import sh


def stack_deploy(stack_file: str, stack: str, *, registry_auth: bool = False) -> str:
    """`--resolve-image never`: images are local or already pinned by digest; no registry
    round trip. `--with-registry-auth` hands the host's registry login to the engine."""
    auth = " --with-registry-auth" if registry_auth else ""
    return (f"docker stack deploy --resolve-image never --prune{auth} -c {sh(stack_file)} "
            f"{sh(stack)}")


def registry_login(server: str, username: str, password: str) -> Command:
    """The password goes on the channel's stdin: never on a command line (where `ps` shows
    it), nor in anything that shows the command."""
    return Command("docker", "login", "--username", username, "--password-stdin", server,
                   Raw(">/dev/null"), secret_stdin=Secret(password + "\n"))


def pull_images(images: list[str]) -> str:
    """Every image pulled at once (a task whose image, pinned by digest, is present starts
    without a pull); the status is the last failure's, each pull's own words on stderr. It
    ends in `(exit $rc)`, not `exit`: a wrapper's cleanup after it (the lock's heartbeat
    loop) still runs."""
    pulls = "".join(f"docker pull --quiet {sh(image)} >/dev/null & p{i}=$!; "
                    for i, image in enumerate(images))
    waits = "".join(f"wait $p{i} || rc=$?; " for i in range(len(images)))
    return f"rc=0; {pulls}{waits}(exit $rc)"


def reset_stack_image_labels(services: dict[str, str]) -> str:
    """Make `docker stack deploy` see a changed image for services edited by hand: their
    stack label is set to what they run now (a service label: no task restarts)."""
    return " && ".join(f"docker service update --quiet --detach --label-add "
                       f"{sh('com.docker.stack.image=' + running)} {sh(name)} >/dev/null"
                       for name, running in sorted(services.items())) or "true"


def task_errors(*services: str) -> str:
    """Why the engine's tasks of each service failed, newest first (the engine's own words),
    one service after the other."""
    return " ; ".join(f"docker service ps --no-trunc --format '{{{{.Image}}}} {{{{.Error}}}}' "
                      f"{sh(service)} | grep -v ' $' | head -n 3" for service in services)


def restart_services(names: list[str]) -> str:
    """A rolling restart: the same spec, new tasks, by the service's own update_config
    (start-first: each new task healthy before an old one stops)."""
    return " && ".join(f"docker service update --force --detach --quiet {sh(name)} >/dev/null"
                       for name in names)


# the engine's own words for a service that does not exist (`Error: no such service: x`)
_NO_SUCH_SERVICE = "*[Nn]'o such service'*"


def service_replicas(name: str) -> str:
    """The replica count the service's spec asks for (`0` for a paused env), or `absent`
    when there is no such service. Any other failure fails the command, the engine's words
    on stderr: an engine that does not answer must not read as "not deployed"."""
    return (f"( r=$(docker service inspect --format '{{{{.Spec.Mode.Replicated.Replicas}}}}' "
            f"-- {sh(name)} 2>&1) || case \"$r\" in {_NO_SUCH_SERVICE}) echo absent; exit 0;; "
            f"*) printf '%s\\n' \"$r\" >&2; exit 1;; esac; printf '%s\\n' \"$r\" )")


def scale_services(wanted: dict[str, int]) -> str:
    """One command for every service: `docker service scale --detach a=1 b=1`."""
    return "docker service scale --detach " + " ".join(
        sh(f"{name}={count}") for name, count in sorted(wanted.items()))


# node's own fetch, for images that have node and neither wget nor curl (node:20-slim)
_NODE_GET = "fetch(process.argv[1]).then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"


def health_probe(url: str) -> str:
    """An app's healthcheck (`CMD-SHELL`) when its config names no command: the URL answers
    2xx. The image decides the client: busybox and alpine images have wget, Debian's curl,
    and the official node:*-slim images neither, only node itself."""
    u = sh(url)
    return (f"if command -v wget >/dev/null; then wget -q -O /dev/null {u}; "
            f"elif command -v curl >/dev/null; then curl -fsSL -o /dev/null {u}; "
            f"else node -e {sh(_NODE_GET)} {u}; fi || exit 1")
