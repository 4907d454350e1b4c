"""Bounded polling for conditions, so tests wait on state rather than on fixed sleeps."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

_UNSET: Any = object()


def _failure(message: str, timeout: float, last: Any, error: BaseException | None) -> AssertionError:
    parts = [message or "condition not met", f"timed out after {timeout:g}s"]
    if last is not _UNSET:
        parts.append(f"last value: {last!r}")
    if error is not None:
        parts.append(f"last error: {type(error).__name__}: {error}")
    return AssertionError("; ".join(parts))


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.02,
    message: str = "",
) -> T:
    """Poll `predicate` until it returns a truthy value (returned); exceptions count as not yet.

    Raises AssertionError naming `message`, the last value and the last exception on timeout.
    """
    deadline = time.monotonic() + timeout
    last: Any = _UNSET
    error: BaseException | None = None
    while True:
        try:
            last = predicate()
            error = None
            if last:
                return last
        except Exception as e:
            error = e
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _failure(message, timeout, last, error)
        time.sleep(min(interval, remaining))


async def wait_until_async(
    predicate: Callable[[], T | Awaitable[T]],
    timeout: float = 10.0,
    interval: float = 0.02,
    message: str = "",
) -> T:
    """Async `wait_until`; `predicate` may be a plain function or return an awaitable."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Any = _UNSET
    error: BaseException | None = None
    while True:
        try:
            value = predicate()
            if inspect.isawaitable(value):
                value = await asyncio.wait_for(value, max(deadline - loop.time(), 0.001))
            last = value
            error = None
            if last:
                return last  # type: ignore[return-value]
        except Exception as e:  # includes TimeoutError from a slow awaitable
            error = e
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise _failure(message, timeout, last, error)
        await asyncio.sleep(min(interval, remaining))
