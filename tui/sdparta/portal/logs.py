"""Portal logging that hostile input cannot flood: a rate limit per kind of line, short lines.

Anyone can send malformed requests or drop connections mid-request; each would otherwise be a
traceback on stderr. They become one rate-limited INFO line; real bugs still log their traceback
(rate-limited the same way).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from typing import Any

from aiohttp.multipart import BadContentDispositionHeader

from sdparta.portal.clients import TokenBucket

# aiohttp warns once per distinct malformed Content-Disposition, and the text is the client's: each
# new header would be a new line on stderr. The upload is refused (or the part ignored) anyway.
warnings.filterwarnings("ignore", category=BadContentDispositionHeader)


class LogLimiter:
    """At most ``burst`` lines per kind, refilled at ``per_s``; the next line says how many were
    dropped. Hostile input must not be able to fill the disk or drown real problems."""

    def __init__(self, per_s: float = 0.2, burst: float = 10) -> None:
        self.per_s = per_s
        self.burst = burst
        self._buckets: dict[str, TokenBucket] = {}
        self._dropped: dict[str, int] = {}

    def log(self, logger: logging.Logger | logging.LoggerAdapter[logging.Logger], level: int, kind: str,
            msg: str, *args: Any, exc_info: bool = False) -> None:
        bucket = self._buckets.get(kind)
        if bucket is None:
            bucket = self._buckets[kind] = TokenBucket(self.per_s, self.burst)
        if bucket.take() > 0:
            self._dropped[kind] = self._dropped.get(kind, 0) + 1
            return
        dropped = self._dropped.pop(kind, 0)
        if dropped:
            msg += f" ({dropped} similar lines suppressed)"
        logger.log(level, msg, *args, exc_info=exc_info)


def describe(exc: BaseException | None) -> str:
    """One short line for an exception from the network (its text is attacker-chosen: repr, capped)."""
    if exc is None:
        return "unknown error"
    text = repr(str(exc))
    return f"{type(exc).__name__}: {text[:160]}{'…' if len(text) > 160 else ''}"


class ServerLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's connection logger: malformed requests and resets become one rate-limited line,
    not a traceback each (they are the client's problem, and anyone can send them)."""

    def __init__(self, logger: logging.Logger, limiter: LogLimiter) -> None:
        super().__init__(logger, {})
        self.limiter = limiter

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        with contextlib.suppress(TypeError, ValueError):
            msg = str(msg) % args
        self.limiter.log(self.logger, logging.INFO, "bad-request", "%s: %s", msg, describe(exc))

