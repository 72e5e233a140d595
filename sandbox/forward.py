"""TCP forwarding across the sandbox's network namespaces, in one process.

The sandbox's extra nodes live in network namespaces of their own, where 127.0.0.1 is the
node's loopback, not this machine's. A node's engine still pulls `127.0.0.1:PORT/...` (the
names every sandbox image has, and the registry's certificate), and this machine still reaches
a node's sshd and edge on 127.0.0.1 only (test traffic never leaves loopback). Each listener is
opened inside the namespace it serves and each connection to its target inside the target's
namespace: `setns(2)` on this one thread between the two, so one small daemon serves them all.

Run as `python -m sandbox.forward SPEC...`, each SPEC
`LISTEN_NS:LISTEN_PORT=TARGET_NS:TARGET_HOST:TARGET_PORT`, where a namespace is a name under
/run/netns or `-` for this machine's own; the listener binds 127.0.0.1 of its namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass

CLONE_NEWNET = 0x40000000
HOST = "-"


@dataclass(frozen=True)
class Route:
    listen_ns: str
    listen_port: int
    target_ns: str
    target_host: str
    target_port: int


def parse(spec: str) -> Route:
    """`ns:port=ns:host:port`; a ValueError names the spec."""
    try:
        listen, target = spec.split("=", 1)
        listen_ns, listen_port = listen.rsplit(":", 1)
        target_ns, target_host, target_port = target.split(":", 2)
        route = Route(listen_ns, int(listen_port), target_ns, target_host, int(target_port))
    except ValueError:
        raise ValueError(f"bad forward {spec!r}: want NS:PORT=NS:HOST:PORT") from None
    for name in (route.listen_ns, route.target_ns):
        if name != HOST and (not name or "/" in name or name.startswith(".")):
            raise ValueError(f"bad namespace {name!r} in {spec!r}")
    return route


def spec(route: Route) -> str:
    return (f"{route.listen_ns}:{route.listen_port}="
            f"{route.target_ns}:{route.target_host}:{route.target_port}")


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextlib.contextmanager
def inside(ns: str) -> Iterator[None]:
    """Sockets made in this block belong to `ns` (they keep it after the block ends)."""
    if ns == HOST:
        yield
        return
    target = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        home = os.open("/proc/self/ns/net", os.O_RDONLY)
        try:
            _setns(target)
            try:
                yield
            finally:
                _setns(home)
        finally:
            os.close(home)
    finally:
        os.close(target)


def _listener(route: Route) -> socket.socket:
    with inside(route.listen_ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", route.listen_port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            writer.close()


async def _serve(route: Route) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            with inside(route.target_ns):
                upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            upstream.setblocking(False)
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(
                upstream, (route.target_host, route.target_port)), 10)
            up_reader, up_writer = await asyncio.open_connection(sock=upstream)
        except (TimeoutError, OSError):
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    return await asyncio.start_server(handle, sock=_listener(route))


async def main(routes: list[Route]) -> None:
    servers = [await _serve(r) for r in routes]
    print("ready", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    try:
        parsed = [parse(a) for a in sys.argv[1:]]
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parsed))
