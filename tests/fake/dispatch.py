"""One answerer in the test's own process for the scripted programs a fake host's shell runs.

Each scripted program on the fake host's PATH (`docker`, Debian's system programs) is a short
`sh` script, of the shell's builtins alone, that hands its arguments (and its stdin, when the
call reads one) to a thread of the test's process through FIFOs and prints what it answers. A
Python interpreter started per call costs 30-50 ms; the suite's fake hosts make tens of
thousands of calls, and that start was most of their time.

The thread answers one call at a time, so a program's state file is never written by two calls
at once (the steps a deploy runs together each call `docker`).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
import traceback
from collections.abc import Callable
from pathlib import Path

from vedfin_ops.remote.quoting import sh

#: a call's words (after its kind) and its stdin -> exit status ("exec" for the client's own
#: `after`), what it printed, what it said on stderr
Handler = Callable[[list[str], str], tuple[str, str, str]]

SLOTS = 64  # programs that may wait for an answer at once (a pipeline runs a few)
#: a program: a free slot taken (a file made only if none is there: `set -C`), its stdin kept
#: when the call reads one, its words to the dispatcher (NUL-separated: no argument holds a
#: NUL), then through the slot's FIFO its exit status and what it printed (`lines`), the slot
#: given back
CLIENT = """#!/bin/sh
set -C
i=0
until echo $$ 2>/dev/null > {calls}/$i.busy; do
  i=$((i + 1))
  if [ $i -ge {slots} ]; then echo "{name}: every slot is busy" >&2; exit 70; fi
done
set +C
c={calls}/$i
exec 3<>"$c"
: > "$c.stdin"
{stdin}
printf '%s\\0' {kind} {head} "$@" > "$c.in"
echo "call $i" > {requests}
read rc out errs <&3
while [ "$out" -gt 1 ]; do IFS= read -r l <&3; printf '%s\\n' "$l"; out=$((out - 1)); done
if [ "$out" = 1 ]; then IFS= read -r l <&3; printf '%s' "$l"; fi
while [ "$errs" -gt 1 ]; do IFS= read -r l <&3; printf '%s\\n' "$l" >&2; errs=$((errs - 1)); done
if [ "$errs" = 1 ]; then IFS= read -r l <&3; printf '%s' "$l" >&2; fi
exec 3<&-
echo "done $i" > {requests}
{after}
exit "$rc"
"""


def lines(text: str) -> list[str]:
    """What the program reads back: its lines, the last one without its newline (empty when
    the text ends with one)."""
    return text.split("\n") if text else []


class Dispatcher:
    """The programs' one answerer in this process: a thread that runs each call in turn."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.handlers: dict[str, Handler] = {}
        self.calls = 0
        self.folder = Path(tempfile.mkdtemp(prefix="fake-programs-"))
        for slot in range(SLOTS):
            os.mkfifo(self.folder / str(slot))
        requests = self.folder / "requests"
        os.mkfifo(requests)
        # read and write: never an end of file between two programs' calls
        self.requests = os.fdopen(os.open(requests, os.O_RDWR), "rb", buffering=0)
        atexit.register(self.remove)
        threading.Thread(target=self.serve, name="fake-programs", daemon=True).start()

    def remove(self) -> None:
        """At exit, of this process only (a forked child exiting keeps its parent's FIFOs)."""
        if os.getpid() == self.pid:
            shutil.rmtree(self.folder, ignore_errors=True)

    def client(self, kind: str, handler: Handler, *, name: str, head: str = "",
               stdin: str = "", after: str = "") -> str:
        """The script of a program whose calls `handler` answers: `head` (shell words) goes
        before its arguments, `stdin` is shell that copies stdin to "$c.stdin" when the call
        reads one, `after` runs once the answer is printed (`rc` holds its status)."""
        self.handlers[kind] = handler
        return CLIENT.format(calls=sh(str(self.folder)), kind=sh(kind), head=head,
                             requests=sh(str(self.folder / "requests")), slots=SLOTS,
                             name=name, stdin=stdin, after=after)

    def serve(self) -> None:
        line = b""
        while True:
            line += self.requests.read(4096)
            while b"\n" in line:
                request, line = line.split(b"\n", 1)
                what, slot = request.decode().split()
                try:
                    if what == "done":  # the program read its answer: its slot is free
                        os.unlink(self.folder / f"{slot}.busy")
                    else:
                        self.calls += 1
                        if self.calls % 256 == 0:
                            self.reclaim()
                        self.answer(self.folder / slot)
                except Exception:  # that program waits for its test's timeout
                    traceback.print_exc()  # the thread answers the next ones

    def answer(self, slot: Path) -> None:
        kind = "program"
        try:
            kind, *words = Path(f"{slot}.in").read_bytes().decode(
                errors="replace").split("\0")[:-1]
            stdin = Path(f"{slot}.stdin").read_bytes().decode(errors="replace")
            code, out, errs = self.handlers[kind](words, stdin)
        except Exception:  # a bug in a fake: the test fails on it, never hangs
            code, out, errs = "70", "", f"fake {kind}: {traceback.format_exc()}"
        said, told = lines(out), lines(errs)
        text = "".join(f"{line}\n" for line in [f"{code} {len(said)} {len(told)}", *said, *told])
        try:
            # the program holds its FIFO open for reading (never blocks); more than a pipe's
            # buffer is written as it reads
            fd = os.open(slot, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: no reader, the program was killed (a signal fault)
            self.free(slot)
            return
        os.set_blocking(fd, True)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(text.encode())
        except BrokenPipeError:  # killed while it read
            self.free(slot)

    def free(self, slot: Path) -> None:
        """A killed program's slot, given back (a FIFO keeps no data once nobody holds it)."""
        Path(f"{slot}.busy").unlink(missing_ok=True)

    def reclaim(self) -> None:
        """Slots of programs killed after their answer was written (no `done` came)."""
        for busy in self.folder.glob("*.busy"):
            try:
                pid = int(busy.read_text() or 0)
                if pid:
                    os.kill(pid, 0)
            except ProcessLookupError:
                busy.unlink(missing_ok=True)
            except (OSError, ValueError):
                pass

_DISPATCHER: list[Dispatcher] = []
_LOCK = threading.Lock()


def dispatcher() -> Dispatcher:
    """This process's (a forked child has none of its parent's threads: one of its own)."""
    with _LOCK:
        if not _DISPATCHER or _DISPATCHER[0].pid != os.getpid():
            _DISPATCHER[:] = [Dispatcher()]
        return _DISPATCHER[0]
