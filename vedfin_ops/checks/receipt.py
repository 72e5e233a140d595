"""A zero-downtime receipt: what a user's requests met while the engine replaced the tasks.

From `docker stack deploy` until the rollout is judged, one thread per app asks the app's
health path through the edge (as smoke does: the public name, the edge's port, or the origin
with the domain as SNI) at a steady rate from the operator's machine, and records each answer.
The receipt is a measured fact (sent, failed, the longest gap between two good answers,
latencies), not a reading of the config: a start-first update whose new task passes its health
check before it accepts outside connections still drops requests, and only a probe sees that.

The probe needs nothing on the host, is bounded in time and in requests, and never fails a
run by itself: a probe that cannot run says so in the receipt (`error`). `summarize` is pure.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import requests

from vedfin_ops.checks.endpoints import Endpoint, app_endpoint
from vedfin_ops.checks.smoke import Options, session_for, trusting
from vedfin_ops.config.model import Config

RATE = 10.0  # requests per second per app: light beside a rollout, >= 100 in a 10 s window
TIMEOUT = 2.0  # an answer slower than this counts as failed (a user gives up sooner)
LIMIT_S = 900.0  # the probe's own bound, whatever its caller does


@dataclass(frozen=True)
class Answer:
    """One request: when it was sent (monotonic), how long it took, and what went wrong."""

    at: float
    seconds: float
    failure: str = ""  # "" | "HTTP 502" | "refused" | "reset" | "timeout" | "tls" | "other"


@dataclass
class AppReceipt:
    sent: int = 0
    failed: int = 0
    longest_gap: float = 0.0  # seconds between two good answers (or the window's ends)
    p50: float = 0.0
    p95: float = 0.0
    max: float = 0.0
    failures: dict[str, int] = field(default_factory=dict)  # kind -> count

    def to_dict(self) -> dict[str, Any]:
        return {"sent": self.sent, "failed": self.failed,
                "longestGap": round(self.longest_gap, 3), "p50": round(self.p50, 4),
                "p95": round(self.p95, 4), "max": round(self.max, 4),
                "failures": dict(sorted(self.failures.items()))}


@dataclass
class Receipt:
    """Per app, and the probe's own trouble (`error`: the figures are then partial)."""

    apps: dict[str, AppReceipt] = field(default_factory=dict)
    seconds: float = 0.0
    error: str = ""

    @property
    def sent(self) -> int:
        return sum(a.sent for a in self.apps.values())

    @property
    def failed(self) -> int:
        return sum(a.failed for a in self.apps.values())

    @property
    def longest_gap(self) -> float:
        return max((a.longest_gap for a in self.apps.values()), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {"sent": self.sent, "failed": self.failed,
                "longestGap": round(self.longest_gap, 3), "seconds": round(self.seconds, 2),
                "apps": {name: a.to_dict() for name, a in sorted(self.apps.items())},
                **({"error": self.error} if self.error else {})}

    def line(self) -> str:
        return summary_line(self.to_dict())


def summary_line(receipt: dict[str, Any]) -> str:
    """One line from a recorded receipt (release.json, the audit line, status)."""
    try:
        apps = receipt.get("apps") or {}
        each = ", ".join(f"{n} {a.get('failed', 0)}/{a.get('sent', 0)}"
                         for n, a in sorted(apps.items()))
        gap = float(receipt.get("longestGap", 0))
        text = (f"{receipt.get('failed', 0)} failed of {receipt.get('sent', 0)} requests "
                f"through the edge ({each}), longest gap {gap:.2f} s")
    except (AttributeError, TypeError, ValueError):
        return "unreadable receipt"
    if receipt.get("error"):
        text += f"; the probe: {receipt['error']}"
    return text


def _quantile(sorted_values: list[float], q: float) -> float:
    """The nearest-rank quantile (p95 of 20 values is the 19th, not the maximum)."""
    if not sorted_values:
        return 0.0
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def summarize(answers: list[Answer], started: float, ended: float) -> AppReceipt:
    """One app's figures. The longest gap counts from the window's start to the first good
    answer and from the last good one to its end: an app that never answered has a gap as
    long as the window."""
    out = AppReceipt(sent=len(answers))
    good = sorted(a.at + a.seconds for a in answers if not a.failure)
    for answer in answers:
        if answer.failure:
            out.failed += 1
            out.failures[answer.failure] = out.failures.get(answer.failure, 0) + 1
    edges = [started, *good, max(ended, good[-1] if good else ended)]
    out.longest_gap = max((b - a for a, b in pairwise(edges)), default=0.0)
    # latencies of the answers a user got (a refused connection takes no time)
    latencies = sorted(a.seconds for a in answers if not a.failure)
    out.p50, out.p95 = _quantile(latencies, 0.5), _quantile(latencies, 0.95)
    out.max = latencies[-1] if latencies else 0.0
    return out


def failure_of(exc: BaseException) -> str:
    """What a user would have met, in one word."""
    text = str(exc).lower()
    if isinstance(exc, requests.Timeout):
        return "timeout"
    if isinstance(exc, requests.exceptions.SSLError):
        return "tls"
    if "refused" in text:
        return "refused"
    if "reset" in text or "aborted" in text or "remote end closed" in text or \
            isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "reset"
    return "other"


def targets(config: Config, env: str) -> dict[str, Endpoint]:
    """Each app of `env` with a domain, at its health path (the api's /api/health)."""
    out: dict[str, Endpoint] = {}
    for app in config.apps(env):
        endpoint = app_endpoint(config, app, app.health.path)
        if endpoint is not None:
            out[app.name] = endpoint
    return out


Ask = Callable[[Endpoint], str]  # one request: "" when good, else the failure's word


def asker(options: Options) -> Callable[[Endpoint], Ask]:
    """A request function per app thread, each with its own session (connections kept, as
    a browser keeps them; a new task is reached as the edge balances them)."""
    def make(endpoint: Endpoint) -> Ask:
        session = session_for(endpoint)

        def ask(target: Endpoint) -> str:
            try:
                response = session.get(target.url, headers=target.headers, timeout=TIMEOUT,
                                       allow_redirects=False, verify=options.ca_file or True)
                response.close()
            except requests.RequestException as exc:
                return failure_of(exc)
            return "" if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"
        return ask
    return make


class Probe:
    """Started before the engine moves, stopped once the rollout is judged; never raises
    into its caller."""

    def __init__(self, endpoints: dict[str, Endpoint], make_ask: Callable[[Endpoint], Ask], *,
                 rate: float = RATE, limit: float = LIMIT_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.endpoints = endpoints
        self.make_ask = make_ask
        self.interval = 1.0 / rate
        self.limit = limit
        self.clock = clock
        self.answers: dict[str, list[Answer]] = {name: [] for name in endpoints}
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.errors: list[str] = []
        self.started = self.ended = 0.0

    def only(self, names: set[str]) -> Probe:
        """The probe narrowed to the apps that served before the rollout (a new app, or an
        env paused to zero, has nothing to drop yet)."""
        self.endpoints = {n: e for n, e in self.endpoints.items() if n in names}
        self.answers = {n: [] for n in self.endpoints}
        return self

    def start(self) -> Probe:
        self.started = self.clock()
        for name, endpoint in self.endpoints.items():
            thread = threading.Thread(target=self._ask, args=(name, endpoint),
                                      name=f"receipt-{name}", daemon=True)
            try:
                thread.start()
            except RuntimeError as exc:  # no thread to be had: the run goes on without it
                self.errors.append(f"{name}: not started ({exc})")
                continue
            self.threads.append(thread)
        return self

    def _ask(self, name: str, endpoint: Endpoint) -> None:
        try:
            ask = self.make_ask(endpoint)
            due = self.clock()
            while not self.stopping.is_set():
                if due - self.started >= self.limit:
                    self.errors.append(f"{name}: stopped at its {self.limit:g} s bound")
                    return
                sent = self.clock()
                failure = ask(endpoint)
                took = self.clock() - sent
                if not failure and took > TIMEOUT:  # slow bytes, each within the timeout
                    failure = "timeout"
                self.answers[name].append(Answer(sent, took, failure))
                # a steady rate: after a slow answer, no burst to catch up
                due = max(due + self.interval, self.clock())
                self.stopping.wait(max(0.0, due - self.clock()))
        except Exception as exc:  # the probe's own bug: said, never the run's failure
            self.errors.append(f"{name}: {type(exc).__name__}: {exc}")

    def stop(self) -> Receipt:
        """The receipt of the window so far; the threads end within one request's timeout."""
        self.ended = self.ended or self.clock()
        self.stopping.set()
        for thread in self.threads:
            thread.join(TIMEOUT + 1.0)
        receipt = Receipt(seconds=self.ended - self.started)
        for name, answers in self.answers.items():
            window = [a for a in list(answers) if a.at <= self.ended]
            receipt.apps[name] = summarize(window, self.started, self.ended)
        if self.errors:
            receipt.error = "; ".join(self.errors)
        return receipt


def probe(config: Config, env: str, options: Options | None = None) -> Probe | None:
    """The probe for `env`'s apps through the edge, not started; None when no app has a
    domain (nothing a user reaches)."""
    endpoints = targets(config, env)
    if not endpoints:
        return None
    return Probe(endpoints, asker(trusting(config, options or Options())))
