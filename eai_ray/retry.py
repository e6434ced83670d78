"""One retry policy for eai-ray: exponential backoff with jitter (tenacity), one named policy per use.

What is retried is decided by type, never by message text: an error is retried when it is an
instance of the policy's ``retry_on`` classes and ``errors.is_transient`` says a retry can help.
Everything else is raised at once; when the attempts run out the last error is raised as it is.

policy           retried (typed errors)                       attempts  base    max wait  Retry-After    used by
---------------  -------------------------------------------  --------  ------  --------  -------------  -------------------------
commit_conflict  CommitConflict (another writer committed)    5         0.05 s  2 s       -              storage.tables commits
http             SourceUnavailable: 5xx, timeouts, refused    6 [1]     0.5 s   30 s      <= 300 s [2]   ingestion.rest
                 connections; RateLimited (429)
llm              LLMUnavailable: 5xx, 429, unreachable,       3 [3]     0.5 s   8 s       -              processing.models.llm
                 408 (LLMTimeout)                                                                        (OpenAICompatible)
task             any transient EaiError of one table's step   2         0.5 s   5 s       <= 300 s [2]   orchestration.runner
cdc_reconnect    transient errors and lost connections of a   no limit  0.4 s   5 s       -              orchestration.cdc
                 CDC consumer [4]                                                                        (CdcConsumer.run)
cdc_publish      any failure of the Kafka publisher [4]       no limit  0.4 s   3 s       -              ingestion.cdc.kafka
                                                                                                         (KafkaPublisher.run)

[1] ``max_retries + 1`` of the REST source (``max_retries`` defaults to 5).
[2] An error whose context carries ``retry_after`` (seconds; the REST connector reads the
    ``Retry-After`` header of a 429 or 503, a number of seconds or an HTTP date) waits exactly that
    long instead of the backoff. A ``retry_after`` beyond the cap is not waited for: the error is
    raised at once and the scheduler tries again later.
[3] ``max_retries + 1`` of the client (``max_retries`` defaults to 2); every wait is also cut
    to the time left of the call's timeout, and retrying stops when that time is spent.
[4] A stream retries for as long as it runs: its loop counts attempts itself, starts again at 1
    after a good connection, and waits ``wait_before(attempt)`` on its stop event, so a stop
    request ends the wait at once. What is worth a reconnect stays the loop's decision.

Waits (``equal jitter``): before retry ``n`` (n = 1, 2, ...) the wait is drawn uniformly from
``[h/2, h]`` with ``h = min(max_wait, base * 2 ** (n - 1))``, so waits grow with every retry but
clients that failed together do not come back together.

Callers pass ``sleep=`` (tenacity's injectable sleep; tests record the waits instead of
sleeping) and ``on_retry=`` (called with the error, the attempt that failed and the wait, before
sleeping: the place for a caller's own logging and counters). Per-source settings (a source's
``max_retries``, a test's short base) derive a policy with ``replace``.

Example::

    from eai_ray.retry import COMMIT_CONFLICT, HTTP
    snapshot_id = COMMIT_CONFLICT.call(commit_once)
    HTTP.replace(attempts=source.max_retries + 1).call(get_once, sleep=fake_sleep.append)
"""
from __future__ import annotations

import dataclasses
import email.utils
import logging
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import tenacity

from eai_ray.errors import CommitConflict, EaiError, LLMUnavailable, SourceUnavailable, is_transient

log = logging.getLogger(__name__)

OnRetry = Callable[[BaseException, int, float], None]  # (error, attempt that failed, seconds to wait)


@dataclass(frozen=True)
class Policy:
    """A named retry policy: which typed errors are retried, how often, how long to wait."""

    name: str
    retry_on: tuple[type[BaseException], ...]
    attempts: int  # calls in all, the first one included
    base: float  # the first wait is at most this many seconds
    max_wait: float  # no single backoff wait is longer
    retry_after_cap: float | None = None  # None: retry_after is ignored; else honoured up to this many seconds

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"retry policy {self.name}: attempts must be at least 1 (got {self.attempts})")

    def replace(self, **changes: Any) -> Policy:
        """This policy with some settings changed (a source's max_retries, a test's short base)."""
        return dataclasses.replace(self, **changes)

    def should_retry(self, exc: BaseException) -> bool:
        """True when `exc` is one of this policy's typed transient errors and its retry_after is within the cap."""
        if not isinstance(exc, self.retry_on) or not is_transient(exc):
            return False
        after = retry_after_of(exc)
        return self.retry_after_cap is None or after is None or after <= self.retry_after_cap

    def backoff(self) -> tenacity.wait.wait_base:
        """Equal-jitter exponential backoff: uniform in [h/2, h], h = min(max_wait, base * 2**(n-1))."""
        half, half_max = self.base / 2, self.max_wait / 2
        return (tenacity.wait_exponential(multiplier=half, max=half_max)
                + tenacity.wait_random_exponential(multiplier=half, max=half_max))

    def wait_before(self, attempt: int, *, rng: Callable[[], float] = random.random) -> float:
        """The backoff before retry `attempt` (1, 2, ...): uniform in [h/2, h], the same law as
        ``backoff``, for loops that retry for as long as they run (CDC streams)."""
        h = min(self.max_wait, self.base * 2 ** (max(1, attempt) - 1))
        return h / 2 + rng() * h / 2

    def retrying(self, *, sleep: Callable[[float], Any] | None = None, on_retry: OnRetry | None = None,
                 budget: float | None = None) -> tenacity.Retrying:
        """A tenacity ``Retrying`` for this policy; `budget` (seconds) caps waits and stops retrying once spent."""
        backoff = self.backoff()

        def wait(state: tenacity.RetryCallState) -> float:
            assert state.outcome is not None  # tenacity waits only after an attempt
            after = retry_after_of(state.outcome.exception()) if self.retry_after_cap is not None else None
            seconds = float(after) if after is not None else backoff(state)
            if budget is not None:
                seconds = min(seconds, max(0.0, budget - (state.seconds_since_start or 0.0)))
            return seconds

        stop: tenacity.stop.stop_base = tenacity.stop_after_attempt(self.attempts)
        if budget is not None:
            stop = stop | tenacity.stop_after_delay(budget)

        def before_sleep(state: tenacity.RetryCallState) -> None:
            assert state.outcome is not None  # tenacity sleeps only after an attempt
            exc = state.outcome.exception()
            assert exc is not None  # retries happen on errors only (retry_if_exception)
            log.info("%s: attempt %d/%d failed (%s: %s); retrying in %.2fs", self.name, state.attempt_number,
                     self.attempts, type(exc).__name__, exc, state.upcoming_sleep)
            if on_retry is not None:
                on_retry(exc, state.attempt_number, state.upcoming_sleep)

        sleeper = sleep or time.sleep
        return tenacity.Retrying(
            sleep=lambda seconds: sleeper(float(seconds)),
            stop=stop,
            wait=wait,
            retry=tenacity.retry_if_exception(self.should_retry),
            before_sleep=before_sleep,
            reraise=True,  # the last error itself, never tenacity's RetryError
        )

    def call(self, fn: Callable[..., Any], *args: Any, sleep: Callable[[float], Any] | None = None,
             on_retry: OnRetry | None = None, budget: float | None = None, **kwargs: Any) -> Any:
        """Call ``fn(*args, **kwargs)`` under this policy; returns its result or raises its last error."""
        return self.retrying(sleep=sleep, on_retry=on_retry, budget=budget)(fn, *args, **kwargs)


def retry_after_of(exc: BaseException | None) -> float | None:
    """The ``retry_after`` seconds a typed error carries in its context (None when it carries none)."""
    if not isinstance(exc, EaiError):
        return None
    after = exc.context.get("retry_after")
    return None if after is None else float(after)


def parse_retry_after(value: str | None, *, now: Callable[[], float] = time.time) -> float | None:
    """Seconds from a ``Retry-After`` header: a number of seconds or an HTTP date (None: absent or unreadable)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now())


# The named policies: the one place their numbers live (the table in the module docstring).
COMMIT_CONFLICT = Policy("commit_conflict", (CommitConflict,), attempts=5, base=0.05, max_wait=2.0)
HTTP = Policy("http", (SourceUnavailable,), attempts=6, base=0.5, max_wait=30.0, retry_after_cap=300.0)
LLM = Policy("llm", (LLMUnavailable,), attempts=3, base=0.5, max_wait=8.0)
# a table step: connectors back off on their own, so one more try (a fresh connection) is enough
TASK = Policy("task", (EaiError,), attempts=2, base=0.5, max_wait=5.0, retry_after_cap=300.0)

# streams: unlimited attempts (the loops stop on their own stop event or a permanent error)
CDC_RECONNECT = Policy("cdc_reconnect", (EaiError,), attempts=sys.maxsize, base=0.4, max_wait=5.0)
CDC_PUBLISH = Policy("cdc_publish", (Exception,), attempts=sys.maxsize, base=0.4, max_wait=3.0)
POLICIES = {p.name: p for p in (COMMIT_CONFLICT, HTTP, LLM, TASK, CDC_RECONNECT, CDC_PUBLISH)}
