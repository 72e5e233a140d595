"""`host.prepare`: a bare Debian 12 or Ubuntu 24.04 VPS, reached as root or as a passwordless
sudoer, to every prerequisite of the runbook and the tool. Every step is checked first (that
is the plan, all `--plan` does); then, in order, each step whose check says so is changed and
checked again; a second run finds nothing to change. Every step says what it found and did
(stderr) and the run's audit lines go to `<remote.baseDir>/audit.log`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vedfin_ops import extras
from vedfin_ops.config.model import Config
from vedfin_ops.errors import CheckFailed
from vedfin_ops.host import judge
from vedfin_ops.host import steps as s
from vedfin_ops.host.facts import Facts, Verdict, fail
from vedfin_ops.host.keys import PublicKey, parse
from vedfin_ops.host.steps import Run, Step
from vedfin_ops.monitoring.uptime_kuma import Connect
from vedfin_ops.remote.commands import host as commands
from vedfin_ops.remote.host import RemoteError, RemoteHost
from vedfin_ops.run.interrupts import signals_as_interrupts
from vedfin_ops.run.layout import audit_line
from vedfin_ops.run.lock import now_iso, who
from vedfin_ops.run.operation import Say, bare, describe, safe
from vedfin_ops.run.polling import REAL, Clock

STEPS = (
    Step("os", "system", s.check_os, None),  # Debian 12 or Ubuntu 24.04, else refused
    Step("docker", "Docker engine", s.check_docker, s.apply_docker),  # docker.io, running
    Step("swarm", "swarm", s.check_swarm, s.apply_swarm, ("docker",)),  # at vps.address
    Step("user", "deploy user", s.check_user, s.apply_user, ("docker",)),  # key, baseDir
    Step("swap", "swap", s.check_swap, s.apply_swap),  # /swapfile, fstab, swappiness 10
    Step("firewall", "ufw", s.check_firewall, s.apply_firewall),  # the SSH port allowed first
    Step("monitoring", "netdata and cron", s.check_monitoring, s.apply_monitoring,
         ("docker", "user")),  # netdata reads the engine, the deploy user writes its alarms
    Step("sudoers", "sudoers line", s.check_sudoers, s.apply_sudoers, ("user",)),  # ufw status
    Step("uptime-kuma", "uptime kuma", s.check_kuma, s.apply_kuma, ("docker",)),  # + admin
)

DONE = ("ok", "changed", "skipped")
AGAIN = "run it again: every step checks before it changes anything"
STATES = {"ok": "ok", "change": "would change", "skip": "skipped", "refuse": "refused",
          "fail": "failed"}


@dataclass
class StepResult:
    name: str
    title: str
    status: str = "not run"  # ok, would change, changed, skipped, refused, failed, interrupted
    detail: str = ""

    def line(self) -> str:
        return f"{self.title}: {self.status}" + (f": {self.detail}" if self.detail else "")


@dataclass
class Prepared:
    """What a run found and did, step by step."""

    plan: bool
    steps: list[StepResult] = field(default_factory=list)

    def __getitem__(self, name: str) -> StepResult:
        return next(step for step in self.steps if step.name == name)

    @property
    def changed(self) -> list[str]:
        return [step.name for step in self.steps if step.status in ("changed", "would change")]

    @property
    def done(self) -> list[str]:
        return [step.name for step in self.steps if step.status in DONE]

    @property
    def cannot(self) -> list[str]:
        """The steps whose check says they cannot be done (a plan's `failed`)."""
        return [step.name for step in self.steps if step.status == "failed"]

    def plan_line(self) -> str:
        """A plan's last line: what cannot be done, then how many steps would change."""
        would = (f"{len(self.changed)} step(s) would change" if self.changed
                 else "nothing to change")
        cannot = [self[name].title for name in self.cannot]
        return "host.prepare --plan: " + (f"cannot be done: {', '.join(cannot)}; "
                                          if cannot else "") + would

    def summary(self) -> str:
        """`done: ...; not done: ...` (each with its state), for a one-line error."""
        done = [step.title for step in self.steps if step.status in DONE]
        left = [f"{step.title} ({step.status})" for step in self.steps
                if step.status not in DONE]
        return f"done: {', '.join(done) or 'nothing'}; not done: {', '.join(left) or 'nothing'}"

    def to_dict(self) -> dict[str, Any]:
        return {"plan": self.plan, "changed": self.changed,
                "steps": [{"name": step.name, "title": step.title, "status": step.status,
                           "detail": step.detail} for step in self.steps]}


class PrepareFailed(CheckFailed):
    """A run refused, stopped, or with steps left undone (exit 1); `result` says which."""

    def __init__(self, message: str, result: Prepared, *, interrupted: bool = False) -> None:
        super().__init__(message)
        self.result = result
        self.interrupted = interrupted


class Refused(CheckFailed):
    """The host is not one host.prepare may change (its check says why)."""


def prepare(host: RemoteHost, config: Config, *, public_key: PublicKey | str,
            plan: bool = False, ssh_port: int = 22, secrets: Mapping[str, str] | None = None,
            say: Say = print, paths: commands.Paths | None = None,
            kuma_connect: Connect | None = None, clock: Clock = REAL) -> Prepared:
    """See the module docstring. `public_key`: the operator's key line, authorized for the
    deploy user. `ssh_port`: the port ufw keeps open when the host does not say which one
    this connection came in on. `secrets`: the config's (Uptime Kuma's admin: without them
    that step alone is not done). Returns each step's state; raises PrepareFailed (exit 1)
    when the host was refused, a step could not be done (in a plan too: a step whose check
    says it cannot be), or the run was stopped (Ctrl-C, SIGTERM, SIGHUP, a lost link, a bug):
    its message and `result` say which steps are done and which are not."""
    key = public_key if isinstance(public_key, PublicKey) else parse(public_key)
    values = dict(secrets or {})
    if config.monitoring.uptime_kuma is not None and kuma_connect is None:
        extras.require("uptime_kuma_api", "host.prepare (monitoring.uptimeKuma)")  # exit 2
    runner = _Runner(host, config, key, plan, ssh_port, values, safe(say),
                     paths or commands.Paths(), kuma_connect, clock)
    cancel = getattr(host, "cancel_running", None)
    with signals_as_interrupts(on_signal=cancel, notice=runner.say) as guard:
        failure: BaseException
        try:
            return runner.go()
        except PrepareFailed:
            raise
        except BaseException as exc:  # refused, Ctrl-C, SIGTERM, SIGHUP, a lost link, a bug
            if runner.run is None:  # before the first check: nothing to say about steps
                raise
            failure = exc
        with guard.shielded():
            raise runner.stopped(failure) from None


class _Runner:
    def __init__(self, host: RemoteHost, config: Config, key: PublicKey, plan: bool,
                 ssh_port: int, secrets: Mapping[str, str], say: Say, paths: commands.Paths,
                 kuma_connect: Connect | None, clock: Clock) -> None:
        self.host, self.config, self.key, self.plan = host, config, key, plan
        self.ssh_port, self.secrets, self.say, self.paths = ssh_port, secrets, say, paths
        self.kuma_connect, self.clock = kuma_connect, clock
        self.result = Prepared(plan, [StepResult(step.name, step.title) for step in STEPS])
        self.run: Run | None = None
        self.current: str | None = None  # the step being checked or changed
        self.applying = False  # inside an apply: a stop there may leave the step half done
        self.base_made = False

    def go(self) -> Prepared:
        facts = Facts.parse(self.host.run(commands.facts(self.paths),
                                          what="host.prepare facts"))
        sudo = judge.needs_sudo(facts)
        self.run = run = Run(self.host, self.config, self.key, facts, sudo,
                             judge.ssh_port(facts) or self.ssh_port, self.paths, self.secrets,
                             self.kuma_connect, self.clock)
        verdicts = {step.name: self.check(step, run) for step in STEPS}  # the plan
        self.current = None
        if self.plan:
            if self.result.cannot:  # exit 1: a run would not finish the job either
                raise PrepareFailed(self.host.redact(self.result.plan_line()), self.result)
            return self.result
        fresh = True  # nothing applied yet: the plan's verdicts still hold
        for step in STEPS:
            verdict = verdicts[step.name] if fresh else self.check(step, run)
            if self.converge(step, run, verdict):
                fresh = False
        self.current = None
        undone = [step for step in self.result.steps if step.status not in DONE]
        changed = [step.name for step in self.result.steps if step.status == "changed"]
        if undone:
            first = undone[0]
            what = "failed" if changed else "changed nothing"
            message = (f"host.prepare {what}: {first.title}: {first.detail or first.status}; "
                       f"{self.result.summary()}; {AGAIN} once that is fixed")
            self.audit("failed", message)
            raise PrepareFailed(self.host.redact(message), self.result)
        self.audit("ok" if changed else "noop", f"changed: {', '.join(changed)}" if changed
                   else "nothing to change")
        return self.result

    def check(self, step: Step, run: Run) -> Verdict:
        """The step's check, recorded; a refusal stops the run."""
        self.current = step.name
        try:
            verdict = step.check(run)
        except CheckFailed as exc:  # a probe that could not run: the step's, not the run's
            verdict = fail(f"its check failed: {bare(str(exc))}")
        self.record(step.name, STATES[verdict.state], verdict.text)
        if verdict.state == "refuse":
            raise Refused(f"host.prepare refused: {step.title}: {verdict.text}")
        return verdict

    def converge(self, step: Step, run: Run, verdict: Verdict) -> bool:
        """Change the step where its check says so, then check it again; True if it did."""
        self.current = step.name
        blocked = [self.result[name].title for name in step.needs
                   if self.result[name].status not in DONE]
        if blocked:
            self.record(step.name, "not run", f"needs {', '.join(blocked)}")
            self.say(f"{step.title}: not run (needs {', '.join(blocked)})")
            return False
        if verdict.state != "change" or step.apply is None:
            self.say(f"{step.title}: {verdict.line()}")
            if verdict.state == "fail":
                self.audit("failed", f"{step.title}: {verdict.text}")
            return False
        self.say(f"{step.title}: {verdict.line(plan=False)}")
        self.audit("started", f"{step.title}: {verdict.text}")
        self.applying = True
        try:
            step.apply(run, verdict)
        except CheckFailed as exc:
            self.applying = False
            self.failed(step, _why(exc, verdict))
            return True
        self.applying = False
        after = self.check(step, run)
        if after.state == "ok":
            self.record(step.name, "changed", verdict.text)
            self.say(f"{step.title}: done")
            self.audit("changed", f"{step.title}: {verdict.text}")
        else:
            self.failed(step, f"still to do after the change: {after.text}")
        return True

    def failed(self, step: Step, why: str) -> None:
        self.record(step.name, "failed", why)
        self.say(f"{step.title}: FAILED: {why}")
        self.audit("failed", f"{step.title}: {why}")

    def record(self, name: str, status: str, detail: str = "") -> None:
        item = self.result[name]
        item.status, item.detail = status, detail

    def audit(self, result: str, detail: str) -> None:
        """One line in the host's audit log, the base folder made first (root's until the
        user step gives it away). Never in a plan; best effort (a warning when it cannot)."""
        if self.plan or self.run is None:
            return
        line = audit_line(now_iso(), who(), "", "host.prepare", result,
                          detail=self.host.redact(bare(detail)))
        try:
            if not self.base_made:
                self.run.ensure_base()
                self.base_made = True
            self.run.audit(line)
        except Exception as exc:
            self.say(f"warning: the audit line could not be written ({describe(exc)})")

    def stopped(self, exc: BaseException) -> PrepareFailed:
        """The run stopped by `exc`: where, and what is done and what is not."""
        if isinstance(exc, Refused):
            touched = any(step.status in ("changed", "failed") for step in self.result.steps)
            if not touched:  # refused by the plan: nothing was changed, nothing recorded
                return PrepareFailed(f"{bare(str(exc))}; nothing was changed", self.result)
            message = f"{bare(str(exc))}; {self.result.summary()}"
            self.audit("refused", message)
            return PrepareFailed(self.host.redact(message), self.result)
        interrupted = isinstance(exc, KeyboardInterrupt)
        reason = describe(exc)
        where = ""
        if self.current is not None:
            half = "while changing it: it may be half done" if self.applying else \
                "before changing it"
            self.record(self.current, "interrupted" if interrupted else "failed",
                        f"{reason} ({half})")
            where = f" during {self.result[self.current].title} ({half})"
        outcome = "interrupted" if interrupted else "failed"
        message = f"host.prepare {outcome}{where}: {reason}; {self.result.summary()}; {AGAIN}"
        self.audit(outcome, message)
        return PrepareFailed(self.host.redact(message), self.result, interrupted=interrupted)


def _why(exc: CheckFailed, verdict: Verdict) -> str:
    """The host's own `fail:` lines when it gave some, else the error's line; a swap that a
    container may not enable says so."""
    output = exc.output if isinstance(exc, RemoteError) else ""
    said = [line.strip()[len("fail:"):].strip() for line in output.splitlines()
            if line.strip().startswith("fail:")]
    why = "; ".join(said) or bare(str(exc))
    container = str(verdict.data.get("container", "none"))
    if container != "none" and ("swapon" in why or "swappiness" in why):
        why += (f" (this host is a container ({container}): swap and vm.swappiness are the "
                f"machine's it runs on, not its own)")
    return why
