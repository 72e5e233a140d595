"""The local `docker` of `vedfin build`: argument lists for a process started without a
shell (nothing to quote), each a `Command`; the registry password goes on stdin, marked."""

from __future__ import annotations

from collections.abc import Mapping

from vedfin_ops.remote.command import Command, Secret


def build_args(ref: str, dockerfile: str, args: Mapping[str, str], context: str) -> list[str]:
    """`docker build`'s arguments: the image `ref`, its Dockerfile, `--build-arg`s, context."""
    out = ["build", "--tag", ref, "--file", dockerfile]
    for key, value in args.items():
        out += ["--build-arg", f"{key}={value}"]
    return [*out, context]


def _docker(*args: str, config: str | None, secret_stdin: Secret | None = None) -> Command:
    """`docker`, with `--config` when a Docker config folder of its own is given."""
    return Command("docker", *(["--config", config] if config else []), *args,
                   secret_stdin=secret_stdin)


def docker_build(ref: str, dockerfile: str, args: Mapping[str, str], context: str) -> Command:
    """With the user's own Docker setup (context, builder)."""
    return _docker(*build_args(ref, dockerfile, args, context), config=None)


def docker_login(server: str, username: str, password: str, config: str) -> Command:
    """Into the Docker config folder `config`; the password on stdin."""
    return _docker("login", "--username", username, "--password-stdin", server, config=config,
                   secret_stdin=Secret(password + "\n"))


def docker_push(image: str, config: str) -> Command:
    return _docker("push", image, config=config)


def docker_context_host() -> Command:
    """Prints DOCKER_HOST of the user's current docker context (nothing for the default)."""
    return _docker("context", "inspect", "--format", "{{.Endpoints.docker.Host}}", config=None)
