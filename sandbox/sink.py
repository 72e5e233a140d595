"""A webhook sink standing in for Slack and PagerDuty: the sandbox's Uptime Kuma posts its
notifications here (no internet to reach the real ones), and a test reads what arrived. The
same process is the mail sink standing in for the alerts' email (`alerts.email`): an SMTP
server on 127.0.0.1 that the sandbox's Netdata reaches through `sendmail_script`.

`python -m sandbox.sink --port P --out FILE [--smtp-port S]`: every POST, whatever its path
(`/slack`, `/pagerduty`: the path tells the senders apart), is one JSON line in FILE,
`{"time", "path", "body"}`, the body decoded when it is JSON; the answer is 200 "ok", what
Slack answers (PagerDuty's 202 is a 2xx too: Uptime Kuma accepts either). A GET answers how
many lines FILE has: a readiness probe that also shows progress. Every mail delivered over
SMTP (HELO/EHLO, MAIL, RCPT, DATA, RSET, NOOP, QUIT: what a sendmail sends) is one JSON line
in `mail.jsonl` beside FILE, `{"time", "from", "to", "subject", "message"}`, its envelope
recipients in `to`. The standard library's SMTP server is gone from Python 3.12, so it is
these few lines rather than a dependency.
"""

from __future__ import annotations

import argparse
import json
import socketserver
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


def _mail_out(out: Path) -> Path:
    return out.with_name("mail.jsonl")


def _address(command: str) -> str:
    """`MAIL FROM:<a@b> SIZE=1` -> `a@b`."""
    value = command.split(":", 1)[1].strip() if ":" in command else ""
    return value.split(">", 1)[0].lstrip("<").strip() if value.startswith("<") else \
        value.split(" ", 1)[0]


def _record_mail(out: Path, sender: str, recipients: list[str], data: bytes) -> None:
    from email.parser import BytesParser

    message = BytesParser().parsebytes(data)
    line = json.dumps({"time": datetime.now(UTC).isoformat(), "from": sender,
                       "to": recipients, "subject": str(message.get("Subject", "")),
                       "message": data.decode(errors="replace")})
    with _LOCK, _mail_out(out).open("a") as fh:
        fh.write(line + "\n")


def _smtp_handler(out: Path) -> type[socketserver.StreamRequestHandler]:
    class Smtp(socketserver.StreamRequestHandler):
        def say(self, reply: str) -> None:
            self.wfile.write(reply.encode() + b"\r\n")

        def handle(self) -> None:
            self.say("220 vedfin-sandbox mail sink")
            sender = ""  # the envelope of the mail being sent
            recipients: list[str] = []
            while line := self.rfile.readline(65536):
                command = line.decode(errors="replace").rstrip("\r\n")
                verb = command[:4].upper()
                if verb in ("HELO", "EHLO"):
                    self.say("250 vedfin-sandbox")
                elif verb == "MAIL":
                    sender, recipients = _address(command), []
                    self.say("250 OK")
                elif verb == "RCPT":
                    recipients.append(_address(command))
                    self.say("250 OK")
                elif verb == "DATA" and not recipients:
                    self.say("503 RCPT first")
                elif verb == "DATA":
                    self.say("354 end with <CRLF>.<CRLF>")
                    data = b""
                    while (chunk := self.rfile.readline(1 << 20)) not in (b"", b".\r\n",
                                                                          b".\n"):
                        data += chunk[1:] if chunk.startswith(b"..") else chunk
                    _record_mail(out, sender, recipients, data)
                    sender, recipients = "", []
                    self.say("250 OK: delivered to the sink")
                elif verb == "RSET":
                    sender, recipients = "", []
                    self.say("250 OK")
                elif verb == "NOOP":
                    self.say("250 OK")
                elif verb == "QUIT":
                    self.say("221 bye")
                    return
                else:
                    self.say("502 not implemented")

    return Smtp


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
    parser.add_argument("--smtp-port", type=int, help="the mail sink's port on 127.0.0.1")
    args = parser.parse_args(argv)
    if args.smtp_port:
        socketserver.ThreadingTCPServer.allow_reuse_address = True
        smtp = socketserver.ThreadingTCPServer(("127.0.0.1", args.smtp_port),
                                               _smtp_handler(args.out))
        smtp.daemon_threads = True
        threading.Thread(target=smtp.serve_forever, daemon=True).start()
    with ThreadingHTTPServer(("127.0.0.1", args.port), _handler(args.out)) as server:
        server.serve_forever()


def _args(root: Path, port: int | None = None, smtp_port: int | None = None) -> list[str]:
    """The lines file first: it alone says which sandbox a sink belongs to (`running`)."""
    args = ["-m", MODULE, "--out", str(_out(root))]
    if port is not None:
        args += ["--port", str(port)]
    return args if smtp_port is None else [*args, "--smtp-port", str(smtp_port)]


def running(root: Path) -> int | None:
    return python_process(root / "sink.pid", _args(root))


def ensure(root: Path, port: int, smtp_port: int | None = None) -> str:
    """The sink up on 127.0.0.1:`port` (and the mail sink on `smtp_port`); returns its base
    URL (a webhook is that plus a path). What it received before a restart stays in the lines
    files."""
    url = f"http://127.0.0.1:{port}"
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    if python_process(root / "sink.pid", _args(root, port, smtp_port)) is not None:
        return url
    stop(root)
    for taken in (port, smtp_port):
        if taken and port_answers(taken):
            raise SandboxError(f"port {taken} is taken by a process the sandbox did not "
                               f"start (the webhook and mail sink needs it free)")
    with (root / "sink.log").open("ab") as log:
        proc = subprocess.Popen([sys.executable, *_args(root, port, smtp_port)], stdout=log,
                                stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    (root / "sink.pid").write_text(str(proc.pid))
    import requests

    def answers() -> bool:
        try:
            return requests.get(url, timeout=1).ok and (not smtp_port or
                                                        port_answers(smtp_port))
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


def mails(root: Path) -> list[dict[str, Any]]:
    """What was mailed, oldest first."""
    out = _mail_out(_out(root))
    if not out.exists():
        return []
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


SENDMAIL = """#!{python} -S
# Written by `inv sandbox.up`: `sendmail -t` for the sandbox's Netdata (alarm-notify.sh runs
# `sendmail -t [-f FROM]` with the whole message on stdin). The message goes over SMTP to the
# sandbox's mail sink on 127.0.0.1:{port}, to the addresses of its To, Cc and Bcc headers.
import smtplib
import sys
from email.parser import BytesParser
from email.utils import getaddresses

args = sys.argv[1:]
if "-t" not in args:  # a probe of its options (alarm-notify.sh asks about -F): no message
    sys.exit("sendmail (sandbox): only -t (recipients from the headers) is supported")
raw = sys.stdin.buffer.read()
message = BytesParser().parsebytes(raw)
to = [a for _, a in getaddresses([*message.get_all("To", []), *message.get_all("Cc", []),
                                  *message.get_all("Bcc", [])]) if a]
sender = args[args.index("-f") + 1] if "-f" in args[:-1] else \
    (getaddresses([message.get("From", "")])[0][1] or "netdata@localhost")
if not to:
    sys.exit("sendmail (sandbox): no recipient in To, Cc or Bcc")
try:
    with smtplib.SMTP("127.0.0.1", {port}, timeout=10) as smtp:
        smtp.sendmail(sender, to, raw)
except (OSError, smtplib.SMTPException) as exc:
    print(f"sendmail (sandbox): {{exc}}", file=sys.stderr)
    sys.exit(75)  # EX_TEMPFAIL
"""


def sendmail_script(smtp_port: int) -> str:
    """A `sendmail` that hands what it is given to the mail sink (the system's Python: the
    program runs as Netdata's user, who may not reach the interpreter running this)."""
    import shutil

    python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    return SENDMAIL.format(python=python, port=int(smtp_port))


if __name__ == "__main__":
    main()
