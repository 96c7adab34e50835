"""Sliding-window rate limits with the ``limits`` library (Redis in production, memory embedded).

Buckets (settings): ``auth`` for login/register (per IP), ``jobs`` for job submission and
``default`` for everything else (per user when authenticated, per IP otherwise).

Fails open: when the Redis behind the limits cannot be reached, requests are let through (a
limiter outage must not take reads down with it), a warning is logged when the outage starts
and when it ends, and the limiter leaves Redis alone for :data:`RETRY_AFTER_FAILURE` seconds
before it tries again (so an outage costs each request nothing). The retry-once, health-checked
Redis pool (:func:`app.storage.kv.redis_options`) keeps a restart of Redis from failing a
request on a dead pooled connection.
"""

from __future__ import annotations

import logging
import math
import time

from limits import RateLimitItem, parse, storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError as LimitsStorageError

from app.config import Settings
from app.errors import InvalidInput, RateLimited
from app.storage.kv import redis_options

log = logging.getLogger("picfilter.ratelimit")

#: seconds the limiter lets requests through without asking Redis after a failure
RETRY_AFTER_FAILURE = 5.0


class RateLimiter:
    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.rate_limit_enabled
        if settings.redis_url:
            uri = settings.redis_url.replace("redis://", "async+redis://", 1).replace(
                "rediss://", "async+rediss://", 1
            )
            self._storage = storage.storage_from_string(
                uri,
                implementation="redispy",
                key_prefix=f"{settings.redis_key_prefix}rl",
                wrap_exceptions=True,  # every Redis failure is a limits StorageError
                **redis_options(),
            )
        else:
            self._storage = storage.storage_from_string("async+memory://")
        self._limiter = MovingWindowRateLimiter(self._storage)
        self._open_until = 0.0  # monotonic time until which the limiter fails open
        self._failing = False
        self.items: dict[str, RateLimitItem] = {
            "auth": parse(settings.rate_limit_auth),
            "jobs": parse(settings.rate_limit_jobs),
            "default": parse(settings.rate_limit_default),
        }

    async def hit(self, bucket: str, identity: str, cost: int = 1) -> None:
        """Count ``cost`` units (one request, or a batch's jobs), all or none: raise
        :class:`RateLimited` (with Retry-After, when at least one unit frees up) if they do not
        fit in what is left of the window, :class:`InvalidInput` if they exceed the whole limit
        (no wait would help)."""
        if not self.enabled:
            return
        item = self.items[bucket]
        if cost > item.amount:
            raise InvalidInput(
                f"This request counts {cost} against a limit of {item}; send at most "
                f"{item.amount} at once",
                code="over_rate_limit",
                details={"limit": str(item), "cost": cost},
            )
        if time.monotonic() < self._open_until:
            return
        try:
            if await self._limiter.hit(item, bucket, identity, cost=cost):
                self._recovered()
                return
            stats = await self._limiter.get_window_stats(item, bucket, identity)
        except (LimitsStorageError, OSError) as exc:
            self._fail_open(exc)
            return
        self._recovered()
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        counts = f" (this request counts {cost}, {stats.remaining} left)" if cost > 1 else ""
        raise RateLimited(
            f"Rate limit of {item} exceeded{counts}; retry in {retry_after} s",
            details={
                "limit": str(item),
                "retry_after": retry_after,
                "cost": cost,
                "remaining": stats.remaining,
            },
            headers={"Retry-After": str(retry_after)},
        )

    def _fail_open(self, exc: BaseException) -> None:
        self._open_until = time.monotonic() + RETRY_AFTER_FAILURE
        cause = exc.__cause__ or exc
        if not self._failing:
            log.warning(
                "rate-limit store unavailable (%s: %s): letting requests through unlimited",
                type(cause).__name__,
                cause,
            )
        else:
            log.info("rate-limit store still unavailable: %s", type(cause).__name__)
        self._failing = True

    def _recovered(self) -> None:
        if self._failing:
            log.warning("rate-limit store reachable again: limits apply")
            self._failing = False
