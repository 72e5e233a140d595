"""The zero-downtime receipt's figures (pure) and its probe against a real HTTP server on
127.0.0.1 that answers, then refuses, then fails, as a task replaced badly would."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import pairwise

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from vedfin_ops.checks.endpoints import Endpoint
from vedfin_ops.checks.receipt import (
    Answer,
    Probe,
    asker,
    failure_of,
    summarize,
    summary_line,
)
from vedfin_ops.checks.smoke import Options


def test_the_longest_gap_counts_from_the_window_s_start_and_to_its_end() -> None:
    answers = [Answer(1.0, 0.1), Answer(2.0, 0.1, "refused"), Answer(3.0, 0.1, "HTTP 502"),
               Answer(4.0, 0.2)]
    got = summarize(answers, started=0.5, ended=10.0)
    assert (got.sent, got.failed) == (4, 2)
    assert got.failures == {"refused": 1, "HTTP 502": 1}
    assert got.longest_gap == pytest.approx(10.0 - 4.2)  # the last good answer to the end
    assert got.max == pytest.approx(0.2)
    never = summarize([Answer(1.0, 2.0, "timeout")], started=0.0, ended=5.0)
    assert never.longest_gap == pytest.approx(5.0) and never.failed == 1


@given(st.lists(st.tuples(st.floats(0, 100), st.floats(0, 3),
                          st.sampled_from(["", "", "refused", "HTTP 503", "timeout"])),
                max_size=60))
def test_a_receipt_never_counts_more_failures_than_requests(
        raw: list[tuple[float, float, str]]) -> None:
    answers = [Answer(at, seconds, failure) for at, seconds, failure in raw]
    got = summarize(answers, 0.0, 100.0)
    assert 0 <= got.failed <= got.sent == len(answers)
    assert sum(got.failures.values()) == got.failed
    assert 0.0 <= got.longest_gap <= 103.0
    assert got.p50 <= got.p95 <= got.max


def test_a_recorded_receipt_reads_as_one_line_even_when_mangled() -> None:
    line = summary_line({"sent": 212, "failed": 3, "longestGap": 1.234,
                         "apps": {"api": {"sent": 106, "failed": 3}, "web": {"sent": 106}}})
    assert line == ("3 failed of 212 requests through the edge (api 3/106, web 0/106), "
                    "longest gap 1.23 s")
    assert summary_line({"apps": "x"}) == "unreadable receipt"


def test_a_refused_connection_and_a_timeout_are_named_as_a_user_meets_them() -> None:
    with pytest.raises(requests.RequestException) as refused:
        requests.get("http://127.0.0.1:9/", timeout=2)  # the discard port: nobody listens
    assert failure_of(refused.value) == "refused"
    assert failure_of(requests.ReadTimeout("read timed out")) == "timeout"


class _Switch:
    """What the server answers now: 200, or a 502 as the edge says when no task answers."""

    status = 200


@pytest.fixture
def server() -> Iterator[tuple[ThreadingHTTPServer, type[_Switch]]]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(_Switch.status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    _Switch.status = 200
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd, _Switch
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_the_probe_records_502s_between_good_answers_and_stops_when_told(
        server: tuple[ThreadingHTTPServer, type[_Switch]]) -> None:
    httpd, switch = server
    port = httpd.server_address[1]
    endpoint = Endpoint(f"http://127.0.0.1:{port}/api/health", f"api.example.test:{port}")
    probe = Probe({"api": endpoint}, asker(Options()), rate=40).start()
    time.sleep(0.5)
    switch.status = 502
    time.sleep(0.5)
    switch.status = 200
    time.sleep(0.5)
    receipt = probe.stop()
    api = receipt.apps["api"]
    assert 30 <= api.sent <= 80, api  # a steady rate, not a flood
    assert 5 <= api.failed < api.sent and set(api.failures) == {"HTTP 502"}
    assert 0.4 <= api.longest_gap <= 1.2
    assert receipt.to_dict()["failed"] == api.failed and not receipt.error
    sent = api.sent
    time.sleep(0.3)
    assert len(probe.answers["api"]) <= sent + 1  # stopped: no request after the receipt


def test_the_probe_s_own_failure_is_its_error_never_the_run_s() -> None:
    def broken(endpoint: Endpoint) -> object:
        raise RuntimeError("no session to be had")

    probe = Probe({"api": Endpoint("http://127.0.0.1:9/", "x")}, broken,  # type: ignore[arg-type]
                  rate=20).start()
    receipt = probe.stop()
    assert receipt.error == "api: RuntimeError: no session to be had"
    assert receipt.apps["api"].sent == 0 and "the probe: api: RuntimeError" in receipt.line()


def test_after_a_slow_answer_the_probe_keeps_its_rate_instead_of_a_burst() -> None:
    sent: list[float] = []

    def make(endpoint: Endpoint) -> object:
        def ask(target: Endpoint) -> str:
            sent.append(time.monotonic())
            if len(sent) == 2:
                time.sleep(0.6)  # a stalled answer: 12 intervals at 20 a second
            return ""
        return ask

    probe = Probe({"api": Endpoint("http://127.0.0.1:9/", "x")}, make,  # type: ignore[arg-type]
                  rate=20).start()
    time.sleep(1.0)
    probe.stop()
    after = [b - a for a, b in pairwise(sent[2:])]
    assert after and min(after) > 0.03, after  # no catch-up burst after the stall


def test_the_p95_is_a_rank_of_the_good_answers_not_the_maximum() -> None:
    answers = [Answer(float(i), 0.01 * (i + 1)) for i in range(20)]
    answers.append(Answer(30.0, 0.0, "refused"))
    got = summarize(answers, 0.0, 31.0)
    assert got.p95 == pytest.approx(0.19) and got.max == pytest.approx(0.20)
    assert got.p50 == pytest.approx(0.10)


def test_a_probe_narrowed_to_the_apps_that_served_asks_no_other() -> None:
    edge = {"api": Endpoint("http://127.0.0.1:9/", "x"), "admin": Endpoint("http://x/", "x")}
    probe = Probe(edge, lambda endpoint: lambda target: "", rate=50).only({"api"}).start()
    time.sleep(0.2)
    receipt = probe.stop()
    assert set(receipt.apps) == {"api"} and receipt.apps["api"].sent > 0
