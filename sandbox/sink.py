"""A webhook sink standing in for Slack and PagerDuty: the sandbox's Uptime Kuma posts its
notifications here (no internet to reach the real ones), and a test reads what arrived.

`python -m sandbox.sink --port P --out FILE`: every POST, whatever its path
(`/slack`, `/pagerduty`: the path tells the senders apart), is one JSON line in FILE,
`{"time", "path", "body"}`, the body decoded when it is JSON; the answer is 200 "ok", what
Slack answers (PagerDuty's 202 is a 2xx too: Uptime Kuma accepts either). A GET answers how
many lines FILE has: a readiness probe that also shows progress.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sandbox.local import (
    SandboxError,
    port_answers,
    python_process,
    terminate,
    wait_ready,
)

MODULE = "sandbox.sink"
_LOCK = threading.Lock()


def _out(root: Path) -> Path:
    return root / "received.jsonl"


def _handler(out: Path) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            text = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode(
                errors="replace")
            try:
                body: Any = json.loads(text)
            except ValueError:
                body = text
            line = json.dumps({"time": datetime.now(UTC).isoformat(), "path": self.path,
                               "body": body})
            with _LOCK, out.open("a") as fh:  # a line each, flushed on close
                fh.write(line + "\n")
            self._answer(b"ok")

        def do_GET(self) -> None:
            with _LOCK:
                count = len(out.read_text().splitlines()) if out.exists() else 0
            self._answer(f"{count}\n".encode())

        def _answer(self, payload: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="file the JSON lines go to")
    parser.add_argument("--port", type=int, required=True, help="port on 127.0.0.1")
    args = parser.parse_args(argv)
    with ThreadingHTTPServer(("127.0.0.1", args.port), _handler(args.out)) as server:
        server.serve_forever()


def _args(root: Path, port: int | None = None) -> list[str]:
    """The lines file first: it alone says which sandbox a sink belongs to (`running`)."""
    args = ["-m", MODULE, "--out", str(_out(root))]
    return args if port is None else [*args, "--port", str(port)]


def running(root: Path) -> int | None:
    return python_process(root / "sink.pid", _args(root))


def ensure(root: Path, port: int) -> str:
    """The sink up on 127.0.0.1:`port`; returns its base URL (a webhook is that plus a path).
    What it received before a restart stays in the lines file."""
    url = f"http://127.0.0.1:{port}"
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    if python_process(root / "sink.pid", _args(root, port)) is not None:
        return url
    stop(root)
    if port_answers(port):
        raise SandboxError(f"port {port} is taken by a process the sandbox did not start "
                           f"(the webhook sink needs it free)")
    with (root / "sink.log").open("ab") as log:
        proc = subprocess.Popen([sys.executable, *_args(root, port)], stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    (root / "sink.pid").write_text(str(proc.pid))
    import requests

    def answers() -> bool:
        try:
            return requests.get(url, timeout=1).ok
        except requests.RequestException:
            return False

    wait_ready(proc, answers, name="webhook sink", log=root / "sink.log", seconds=15)
    return url


def stop(root: Path) -> None:
    pid = running(root)
    if pid is not None:
        terminate(pid)
    (root / "sink.pid").unlink(missing_ok=True)


def received(root: Path) -> list[dict[str, Any]]:
    """What was posted, oldest first."""
    out = _out(root)
    if not out.exists():
        return []
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


if __name__ == "__main__":
    main()
