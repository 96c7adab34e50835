"""Key-value store for login sessions and small shared state: Redis in production, in-process
otherwise (``app.state.store``; the API's health check calls it "cache").

It lives beside the object storage because it is the other place state is kept outside the
database; it is not a cache (losing an entry logs a user out), hence ``kv``.

Only the few operations the services need, each atomic on both backends: ``get``, ``set`` with a
TTL, ``delete``, and ``compare_and_set`` (refresh-token rotation must not let two requests rotate
the same token). The in-process store is a dict guarded by a lock; it is correct for the single
API process of the embedded default and is written by hand because it is 40 lines.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

import redis.asyncio.retry
import redis.retry
from redis.asyncio import Redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

#: What a store operation raises when the store cannot be reached (Redis down or too slow);
#: the API answers 503 ``cache_unavailable`` for it unless a caller chooses to carry on.
STORE_UNAVAILABLE: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError)

#: Seconds a pooled Redis connection may sit idle before it is checked (PING) on its next use.
REDIS_HEALTH_CHECK_SECONDS = 10


def redis_options(*, sync: bool = False) -> dict[str, Any]:
    """Client options for every Redis client we make (store, rate limits, events).

    After a Redis restart the pool still holds connections to the old server: an idle one is
    checked before use (``health_check_interval``) and a command that fails on a dead
    connection is retried once on a fresh one (``retry``). Timeouts are short so that an outage
    costs a request little (the rate limiter then fails open; the store answers 503). redis-py's
    default retry waits up to seconds between three attempts, too long for a request.
    """
    retry_cls = redis.retry.Retry if sync else redis.asyncio.retry.Retry
    return {
        "socket_connect_timeout": 1.0,
        "socket_timeout": 3.0,
        "health_check_interval": REDIS_HEALTH_CHECK_SECONDS,
        "retry": retry_cls(ExponentialBackoff(cap=0.2, base=0.02), 1),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
    }


class KeyValueStore(Protocol):
    async def get(self, key: str) -> str | None: ...

    async def set(self, key: str, value: str, ttl_seconds: int) -> None: ...

    async def delete(self, key: str) -> bool: ...

    async def compare_and_set(self, key: str, expected: str, value: str, ttl_seconds: int) -> bool:
        """Set ``key`` to ``value`` only if it currently holds ``expected``."""
        ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...


class MemoryStore:
    def __init__(self) -> None:
        self._data: dict[str, tuple[str, float]] = {}
        self._lock = asyncio.Lock()

    def _live(self, key: str) -> str | None:
        item = self._data.get(key)
        if item is None:
            return None
        value, expires = item
        if expires <= time.monotonic():
            del self._data[key]
            return None
        return value

    async def get(self, key: str) -> str | None:
        async with self._lock:
            return self._live(key)

    async def set(self, key: str, value: str, ttl_seconds: int) -> None:
        async with self._lock:
            self._data[key] = (value, time.monotonic() + ttl_seconds)

    async def delete(self, key: str) -> bool:
        async with self._lock:
            return self._data.pop(key, None) is not None

    async def compare_and_set(self, key: str, expected: str, value: str, ttl_seconds: int) -> bool:
        async with self._lock:
            if self._live(key) != expected:
                return False
            self._data[key] = (value, time.monotonic() + ttl_seconds)
            return True

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._data.clear()


_CAS_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
"""


class RedisStore:
    def __init__(self, url: str, prefix: str) -> None:
        self.redis: Redis = Redis.from_url(url, decode_responses=True, **redis_options())
        self.prefix = prefix
        self._cas = self.redis.register_script(_CAS_SCRIPT)

    def _k(self, key: str) -> str:
        return self.prefix + key

    async def get(self, key: str) -> str | None:
        value = await self.redis.get(self._k(key))
        return None if value is None else str(value)

    async def set(self, key: str, value: str, ttl_seconds: int) -> None:
        await self.redis.set(self._k(key), value, ex=ttl_seconds)

    async def delete(self, key: str) -> bool:
        return bool(await self.redis.delete(self._k(key)))

    async def compare_and_set(self, key: str, expected: str, value: str, ttl_seconds: int) -> bool:
        return bool(await self._cas(keys=[self._k(key)], args=[expected, value, ttl_seconds]))

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    async def close(self) -> None:
        await self.redis.aclose()


def make_store(redis_url: str | None, prefix: str) -> KeyValueStore:
    return RedisStore(redis_url, prefix) if redis_url else MemoryStore()
