"""Retries, several endpoints and timeouts around tritonclient's asyncio clients.

:class:`EndpointPool` stands in for one ``tritonclient.{http,grpc}.aio.InferenceServerClient``: every
method of that client (``infer``, ``is_server_live``, ...) is called on one of the endpoints under a
per-attempt timeout; a call that fails because the server could not be reached or answered "unavailable"
is retried on the next endpoint after an exponential backoff with full jitter, until the attempts or the
call's deadline run out. Every SPIN call is a read (recognising an image changes nothing on the server),
so repeating it is safe. Errors of the request itself (a bad image, an unknown model) are raised at once.

Successive calls start on successive endpoints, so a pool also spreads load when there is no balancer.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from tritonclient.utils import InferenceServerException

# A load balancer in front of the replicas answers 502/503/504 when the replica it chose died mid-request
# or none is up; gRPC says UNAVAILABLE for a refused or reset connection. Triton's own request errors are 400s.
RETRYABLE_STATUSES = frozenset({"502", "503", "504", "StatusCode.UNAVAILABLE"})


@dataclass(frozen=True)
class RetryPolicy:
    """How a call is retried.

    Args:
        attempts: tries per call in all, across endpoints (1 = no retry).
        backoff: seconds before the first retry; doubled after each, up to ``max_backoff``, and each wait
            drawn uniformly from ``[0, that]`` so that clients that failed together do not retry together.
        max_backoff: the longest single wait.
        attempt_timeout: seconds one attempt may take (None: no limit but the client's own).
        deadline: seconds a call may take in all, waits included (None: only ``attempts`` bound it).
    """

    attempts: int = 5
    backoff: float = 0.05
    max_backoff: float = 2.0
    attempt_timeout: float | None = 60.0
    deadline: float | None = 120.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {self.attempts}")
        if self.backoff < 0 or self.max_backoff < 0:
            raise ValueError("backoff and max_backoff must not be negative")
        for name in ("attempt_timeout", "deadline"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")

    def wait(self, retry: int, rng: random.Random) -> float:
        """Seconds to sleep before retry number ``retry`` (1-based)."""
        return rng.uniform(0, min(self.max_backoff, self.backoff * 2 ** (retry - 1)))


NO_RETRY = RetryPolicy(attempts=1)


def retryable(error: BaseException) -> bool:
    """True for failures of reaching a server, not of the request: refused/reset connections, a proxy's
    502/503/504, gRPC UNAVAILABLE, an attempt that timed out."""
    if isinstance(error, InferenceServerException):
        return str(error.status()) in RETRYABLE_STATUSES
    if isinstance(error, (ConnectionError, asyncio.TimeoutError, TimeoutError)):
        return True
    try:  # the HTTP client's connection errors (refused, reset, server disconnected) are aiohttp's
        import aiohttp
    except ImportError:
        return isinstance(error, OSError)
    return isinstance(error, (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError))


def parse_urls(urls: str | Sequence[str]) -> list[str]:
    """``"h1:p1,h2:p2"`` or a sequence of ``host:port`` -> the list, in order, without blanks."""
    items = urls.split(",") if isinstance(urls, str) else list(urls)
    parsed = [u.strip() for u in items if u and u.strip()]
    if not parsed:
        raise ValueError("no server URL given")
    return parsed


class RetriesExhausted(ConnectionError):
    """Every attempt of a call failed to reach a server; the message lists each attempt's error."""


class EndpointPool:
    """One tritonclient asyncio client per endpoint, used as if it were one client.

    Args:
        make_client: ``url -> tritonclient asyncio client`` (e.g. ``tritonclient.grpc.aio.InferenceServerClient``).
        urls: the endpoints (see :func:`parse_urls`).
        policy: the :class:`RetryPolicy`.
        seed: for the backoff jitter (tests).
    """

    def __init__(self, make_client: Callable[[str], Any], urls: str | Sequence[str], policy: RetryPolicy = RetryPolicy(), seed: int | None = None):
        self.urls = parse_urls(urls)
        self.policy = policy
        self.clients = [make_client(u) for u in self.urls]
        self.retries = 0  # retried attempts so far, for reports
        self._next = itertools.count()
        self._rng = random.Random(seed)

    async def call(self, method: str, *args, **kwargs):
        """``client.<method>(*args, **kwargs)`` on one endpoint, retried on the next ones as the policy says."""
        policy = self.policy
        start = time.monotonic()
        first = next(self._next)
        errors: list[str] = []
        for attempt in range(policy.attempts):
            index = (first + attempt) % len(self.clients)
            timeout = policy.attempt_timeout
            if policy.deadline is not None:
                left = policy.deadline - (time.monotonic() - start)
                if left <= 0:
                    break
                timeout = left if timeout is None else min(timeout, left)
            try:
                return await asyncio.wait_for(getattr(self.clients[index], method)(*args, **kwargs), timeout)
            except Exception as e:
                if not retryable(e):
                    raise
                errors.append(f"{self.urls[index]}: {_describe(e)}")
            if attempt + 1 < policy.attempts:
                self.retries += 1
                await asyncio.sleep(policy.wait(attempt + 1, self._rng))
        raise RetriesExhausted(f"{method} failed on every attempt ({len(errors)}): " + "; ".join(errors))

    def __getattr__(self, method: str):
        if method.startswith("_"):
            raise AttributeError(method)

        async def bound(*args, **kwargs):
            return await self.call(method, *args, **kwargs)

        return bound

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.clients), return_exceptions=True)


def _describe(error: BaseException) -> str:
    if isinstance(error, InferenceServerException):
        return f"[{error.status()}] {error.message()}"
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
