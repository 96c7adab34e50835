"""Sliding-window rate limits with the ``limits`` library (Redis in production, memory embedded).

Buckets (settings): ``auth`` for login/register (per IP), ``jobs`` for job submission and
``default`` for everything else (per user when authenticated, per IP otherwise).
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse, storage
from limits.aio.strategies import MovingWindowRateLimiter

from app.config import Settings
from app.errors import InvalidInput, RateLimited


class RateLimiter:
    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.rate_limit_enabled
        if settings.redis_url:
            uri = settings.redis_url.replace("redis://", "async+redis://", 1).replace(
                "rediss://", "async+rediss://", 1
            )
            self._storage = storage.storage_from_string(
                uri, implementation="redispy", key_prefix=f"{settings.redis_key_prefix}rl"
            )
        else:
            self._storage = storage.storage_from_string("async+memory://")
        self._limiter = MovingWindowRateLimiter(self._storage)
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
        if await self._limiter.hit(item, bucket, identity, cost=cost):
            return
        stats = await self._limiter.get_window_stats(item, bucket, identity)
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
