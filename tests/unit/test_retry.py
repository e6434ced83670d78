"""The one retry policy (eai_ray/retry.py): typed errors decide, waits grow with jitter, nothing really sleeps."""
from __future__ import annotations

import email.utils
import re
import sys

import pytest

from eai_ray import retry
from eai_ray.errors import (
    AuthenticationFailed,
    CommitConflict,
    ConfigError,
    LLMTimeout,
    LLMUnavailable,
    RateLimited,
    SourceUnavailable,
)
from eai_ray.retry import COMMIT_CONFLICT, HTTP, LLM, POLICIES, TASK, Policy, parse_retry_after


class Flaky:
    """Fails with the given errors, one per call, then answers 'ok'."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def test_transient_errors_are_retried_with_growing_jittered_waits():
    policy = Policy("t", (SourceUnavailable,), attempts=5, base=1.0, max_wait=100.0)
    slept: list[float] = []
    fn = Flaky(*(SourceUnavailable(f"down {i}") for i in range(4)))
    assert policy.call(fn, sleep=slept.append) == "ok"
    assert fn.calls == 5 and len(slept) == 4
    for n, wait in enumerate(slept, 1):  # wait n lies in [h/2, h], h = base * 2**(n-1)
        assert 2 ** (n - 1) / 2 <= wait <= 2 ** (n - 1)
    assert slept == sorted(slept)  # the windows only grow
    firsts = set()
    for _ in range(20):
        first: list[float] = []
        policy.replace(attempts=2).call(Flaky(SourceUnavailable("x")), sleep=first.append)
        firsts.add(first[0])
    assert len(firsts) > 1  # jittered: clients that failed together do not come back together


def test_waits_never_exceed_max_wait():
    slept: list[float] = []
    policy = Policy("t", (SourceUnavailable,), attempts=12, base=1.0, max_wait=4.0)
    with pytest.raises(SourceUnavailable):
        policy.call(Flaky(*(SourceUnavailable("x") for _ in range(12))), sleep=slept.append)
    assert len(slept) == 11 and max(slept) <= 4.0 and min(slept[3:]) >= 2.0


@pytest.mark.parametrize("policy, error", [
    (HTTP, AuthenticationFailed("wrong token")),  # permanent: a retry gives the same answer
    (HTTP, ValueError("a bug")),  # not one of our typed errors
    (HTTP, CommitConflict("transient, but not the http policy's class")),
    (TASK, ConnectionError("a builtin: the task policy retries only typed errors")),
    (LLM, ConfigError("bad url")),
])
def test_errors_that_a_retry_cannot_help_are_raised_at_once(policy, error):
    slept: list[float] = []
    fn = Flaky(error)
    with pytest.raises(type(error)) as info:
        policy.call(fn, sleep=slept.append)
    assert info.value is error and fn.calls == 1 and slept == []


def test_exhausted_attempts_reraise_the_last_error_itself():
    errors = [CommitConflict(f"conflict {i}", table="t") for i in range(COMMIT_CONFLICT.attempts)]
    slept: list[float] = []
    fn = Flaky(*errors)
    with pytest.raises(CommitConflict) as info:
        COMMIT_CONFLICT.call(fn, sleep=slept.append)
    assert info.value is errors[-1]  # not tenacity's RetryError, not the first one
    assert fn.calls == COMMIT_CONFLICT.attempts and len(slept) == COMMIT_CONFLICT.attempts - 1


def test_on_retry_sees_the_error_the_attempt_and_the_wait():
    seen = []
    slept: list[float] = []
    first, second = SourceUnavailable("a"), RateLimited("b", retry_after=3)
    assert HTTP.call(Flaky(first, second), sleep=slept.append,
                     on_retry=lambda exc, n, wait: seen.append((exc, n, wait))) == "ok"
    assert [(e, n) for e, n, _ in seen] == [(first, 1), (second, 2)]
    assert [w for *_, w in seen] == slept and slept[1] == 3.0


def test_retry_after_is_honoured_and_capped():
    slept: list[float] = []
    fn = Flaky(RateLimited("429", retry_after=7.0), SourceUnavailable("503", status=503, retry_after=12.5))
    assert HTTP.call(fn, sleep=slept.append) == "ok"
    assert slept == [7.0, 12.5]  # exactly what the server asked for, not the backoff

    too_long = RateLimited("429", retry_after=HTTP.retry_after_cap + 1)
    fn = Flaky(too_long)
    with pytest.raises(RateLimited) as info:
        HTTP.call(fn, sleep=slept.append)
    assert info.value is too_long and fn.calls == 1 and slept == [7.0, 12.5]  # fails fast, never waits

    slept.clear()  # a policy without a Retry-After cap ignores it and backs off
    assert LLM.call(Flaky(LLMUnavailable("429", retry_after=600)), sleep=slept.append) == "ok"
    assert len(slept) == 1 and slept[0] <= LLM.base


def test_budget_cuts_waits_and_stops_retrying():
    slept: list[float] = []
    slow = Policy("t", (LLMUnavailable,), attempts=3, base=1000.0, max_wait=1000.0)
    assert slow.call(Flaky(LLMUnavailable("x")), sleep=slept.append, budget=5.0) == "ok"
    assert len(slept) == 1 and slept[0] <= 5.0
    fn = Flaky(LLMTimeout("slow"), LLMTimeout("slow"))
    with pytest.raises(LLMTimeout):
        slow.call(fn, sleep=slept.append, budget=0.0)  # the time is spent: no retry whatever is left
    assert fn.calls == 1


def test_parse_retry_after_seconds_or_http_date():
    now = 1_700_000_000.0
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now=lambda: now) == 30.0
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=lambda: now) == 0.0
    assert parse_retry_after("garbage") is None and parse_retry_after(None) is None and parse_retry_after("") is None


def test_policy_rejects_zero_attempts():
    with pytest.raises(ValueError, match="attempts"):
        HTTP.replace(attempts=0)


def test_the_docstring_table_matches_the_policies():
    doc = retry.__doc__
    for name, p in POLICIES.items():
        row = re.search(rf"^{name}\s.*?\s(\d+|no limit)(?: \[\d\])?\s+([\d.]+) s\s+([\d.]+) s", doc, re.M)
        assert row, f"policy {name} is missing from the table in eai_ray/retry.py"
        attempts = sys.maxsize if row[1] == "no limit" else int(row[1])
        assert (attempts, float(row[2]), float(row[3])) == (p.attempts, p.base, p.max_wait), name


def test_stream_waits_follow_the_policy_law():
    """Loops that retry for as long as they run (CDC) take their waits from the policy: uniform in
    [h/2, h], h doubling from base up to max_wait."""
    from eai_ray.retry import CDC_RECONNECT

    assert CDC_RECONNECT.wait_before(1, rng=lambda: 0.0) == 0.2 and CDC_RECONNECT.wait_before(1, rng=lambda: 1.0) == 0.4
    assert CDC_RECONNECT.wait_before(3, rng=lambda: 1.0) == 1.6
    assert CDC_RECONNECT.wait_before(30, rng=lambda: 1.0) == 5.0 and CDC_RECONNECT.wait_before(30, rng=lambda: 0.0) == 2.5


# --------------------------------------------------------------------------- a caller: the runner's table steps
class _Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, line: str) -> None:
        self.lines.append(line)


def _runner(slept: list[float]):
    from eai_ray.orchestration.runner import PipelineRunner

    runner = object.__new__(PipelineRunner)  # _guard needs only the progress log and the sleep
    runner.progress, runner.sleep = _Log(), slept.append
    return runner


def test_runner_retries_a_transient_table_step_once_then_records_it():
    from eai_ray.orchestration.runner import TableReport

    slept: list[float] = []
    runner, rep = _runner(slept), TableReport(source="api.items", bronze="bronze.items")
    fn = Flaky(SourceUnavailable("refused"), SourceUnavailable("still refused"))
    assert runner._guard(rep, fn) is None
    assert fn.calls == TASK.attempts == 2 and rep.retries == 1 and len(slept) == 1 and slept[0] <= TASK.base
    assert rep.status == "failed" and rep.error["type"] == "SourceUnavailable" and rep.error["message"] == "still refused"
    assert "retrying api.items after SourceUnavailable" in runner.progress.lines[0]

    rep = TableReport(source="api.items", bronze="bronze.items")
    assert runner._guard(rep, Flaky(RateLimited("429", retry_after=4.0))) == "ok"  # its Retry-After is waited
    assert rep.retries == 1 and slept[-1] == 4.0 and rep.status != "failed"


def test_runner_does_not_retry_permanent_errors():
    from eai_ray.orchestration.runner import TableReport

    slept: list[float] = []
    runner, rep = _runner(slept), TableReport(source="db.t", bronze="bronze.t")
    fn = Flaky(AuthenticationFailed("wrong password"))
    assert runner._guard(rep, fn) is None
    assert fn.calls == 1 and rep.retries == 0 and slept == [] and rep.error["type"] == "AuthenticationFailed"
    with pytest.raises(ConfigError):  # a config error stops the run, not just the table
        runner._guard(rep, Flaky(ConfigError("bad field")))
