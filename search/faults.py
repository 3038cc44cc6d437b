"""Which failures are worth retrying, how long to wait between tries, and how to say what failed.

Three kinds of failure (:func:`classify`):

* ``deterministic`` -- bad data, an invalid setting, a bug the same inputs hit again
  (``ValueError`` and its subclasses such as ``DatasetError`` and pydantic's ``ValidationError``,
  ``TypeError``, ``LookupError``, ``ArithmeticError``, ``NotImplementedError``,
  :class:`ResourceUnsatisfiable`). Never retried.
* ``infrastructure`` -- the machinery failed, not the trial: a Ray worker, actor or node died, an
  object was lost, the database was unreachable (exception classes named ``OperationalError``,
  ``InterfaceError`` or ``DisconnectionError``, as SQLAlchemy and the DB-API drivers name them),
  a connection or timeout error, a full disk, :class:`TransientFault`. Retried with exponential
  backoff and jitter until :attr:`RetryPolicy.budget_s` seconds have passed since the first
  failure.
* ``unknown`` -- anything else (``RuntimeError`` ...). Retried, with the same backoff, at most
  :attr:`RetryPolicy.max_unknown` times (the spec's ``execution.max_failures``).

:func:`reason` turns an exception into the one line that is stored and shown: ``Type: message``,
unwrapping Ray's and Tune's wrappers, never a traceback or a path to Ray's ``error.txt``.
"""

from __future__ import annotations

import errno
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

FaultKind = Literal["deterministic", "infrastructure", "unknown"]
T = TypeVar("T")


class TransientFault(Exception):
    """A failure of the machinery (not of the trial) that a later attempt may not meet."""


class ResourceUnsatisfiable(ValueError):
    """A pack asks for more CPUs or GPUs than any node of the cluster has: waiting cannot help."""


_INFRA_NAMES = {
    # Ray: the process, actor or node running the pack went away
    "RayActorError", "ActorDiedError", "ActorUnavailableError", "WorkerCrashedError",
    "NodeDiedError", "ObjectLostError", "OwnerDiedError", "ObjectFetchTimedOutError",
    "OutOfMemoryError", "RaySystemError", "LocalRayletDiedError", "ObjectReconstructionFailedError",
    "GetTimeoutError", "RayChannelTimeoutError",
    # SQLAlchemy / DB-API drivers: the database is unreachable or restarting
    "OperationalError", "InterfaceError", "DisconnectionError",
}
_DETERMINISTIC = (ValueError, TypeError, LookupError, ArithmeticError, NotImplementedError,
                  AttributeError, ImportError)
_WRAPPER_NAMES = {"RayTaskError", "TuneError", "TrainingFailedError"}


def root_cause(exc: BaseException) -> BaseException:
    """The exception a Ray task / Tune wrapper carries (``RayTaskError.cause``, ``__cause__``)."""
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        names = {c.__name__ for c in type(exc).__mro__}
        inner = getattr(exc, "cause", None) if names & _WRAPPER_NAMES else None
        if inner is None and names & _WRAPPER_NAMES:
            inner = exc.__cause__
        if not isinstance(inner, BaseException):
            return exc
        exc = inner
    return exc


def classify(exc: BaseException) -> FaultKind:
    """``deterministic``, ``infrastructure`` or ``unknown`` (see the module docstring)."""
    exc = root_cause(exc)
    names = {c.__name__ for c in type(exc).__mro__}
    if isinstance(exc, TransientFault) or names & _INFRA_NAMES:
        return "infrastructure"
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return "infrastructure"
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO):
        return "infrastructure"
    if isinstance(exc, _DETERMINISTIC):
        return "deterministic"
    return "unknown"


def reason(exc: BaseException, limit: int = 500) -> str:
    """``Type: first line of the message`` of the root cause, at most ``limit`` characters."""
    exc = root_cause(exc)
    text = str(exc).strip()
    names = {c.__name__ for c in type(exc).__mro__}
    if names & {"RayActorError", "ActorDiedError", "WorkerCrashedError"}:
        # Ray's messages run to a page of advice; the first sentence says what happened
        text = text.split(". ")[0]
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    out = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return out if len(out) <= limit else out[:limit - 1] + "…"


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: the n-th retry waits ``d/2 + U(0, d/2)`` seconds with
    ``d = min(max_delay_s, base_s * 2**n)``. Infrastructure faults are retried until ``budget_s``
    seconds have passed since the first failure; unknown ones at most ``max_unknown`` times."""

    budget_s: float = 300.0
    base_s: float = 1.0
    max_delay_s: float = 30.0
    max_unknown: int = 2

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        d = min(self.max_delay_s, self.base_s * 2.0 ** max(0, retry))
        return d / 2 + (rng or random).uniform(0, d / 2)

    def should_retry(self, kind: FaultKind, retries_so_far: int, first_failure: float,
                     now: float | None = None) -> bool:
        """Whether a failure of ``kind`` gets another attempt."""
        now = time.monotonic() if now is None else now
        if kind == "deterministic":
            return False
        if kind == "unknown" and retries_so_far >= self.max_unknown:
            return False
        return now - first_failure < self.budget_s


def sleep_unless(seconds: float, should_cancel: Callable[[], bool] | None, tick: float = 0.2) -> bool:
    """Sleep ``seconds``; return False early (and at once) when ``should_cancel()`` turns true."""
    end = time.monotonic() + seconds
    while True:
        if should_cancel is not None and should_cancel():
            return False
        left = end - time.monotonic()
        if left <= 0:
            return True
        time.sleep(min(tick, left))


def call_with_retry(fn: Callable[[], T], policy: RetryPolicy, *,
                    should_cancel: Callable[[], bool] | None = None,
                    on_retry: Callable[[BaseException, float], None] | None = None) -> T:
    """``fn()``, retried on infrastructure faults (and a few times on unknown ones) with the
    policy's backoff; deterministic errors and exhausted budgets re-raise the last error."""
    retries, first = 0, None
    while True:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - classified below
            now = time.monotonic()
            first = now if first is None else first
            if not policy.should_retry(classify(exc), retries, first, now):
                raise
            wait = policy.delay(retries)
            if on_retry is not None:
                on_retry(exc, wait)
            if not sleep_unless(wait, should_cancel):
                raise
            retries += 1
