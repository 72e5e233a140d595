"""A tunnel to a port on the host (Uptime Kuma's API) is handed out only once it listens."""

from __future__ import annotations

import socket
import threading

import pytest


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_tunnel_is_used_only_once_its_local_end_listens() -> None:
    """Fabric binds a forward's local port in a thread after `forward_local` returns; Uptime
    Kuma's one-shot check connected first and was refused (the bare VPS's second prepare)."""
    from vedfin_ops.remote.host import RemoteError, _listening

    port = _free_port()
    listener = socket.socket()

    def late() -> None:
        threading.Event().wait(0.4)
        listener.bind(("127.0.0.1", port))
        listener.listen()

    thread = threading.Thread(target=late)
    thread.start()
    try:
        _listening(port, "tunnel to port 3002 on vps")  # waits for the late listener
    finally:
        thread.join()
        listener.close()
    with pytest.raises(RemoteError, match=r"^tunnel to port 3002 on vps: its local end "
                                          r"127\.0\.0\.1:\d+ never listened"):
        _listening(_free_port(), "tunnel to port 3002 on vps", seconds=0.3)
