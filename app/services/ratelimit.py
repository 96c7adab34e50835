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
from app.errors import RateLimited


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

    async def hit(self, bucket: str, identity: str) -> None:
        """Count one request; raise :class:`RateLimited` (with Retry-After) over the limit."""
        if not self.enabled:
            return
        item = self.items[bucket]
        if await self._limiter.hit(item, bucket, identity):
            return
        stats = await self._limiter.get_window_stats(item, bucket, identity)
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        raise RateLimited(
            f"Rate limit of {item} exceeded; retry in {retry_after} s",
            details={"limit": str(item), "retry_after": retry_after},
            headers={"Retry-After": str(retry_after)},
        )
