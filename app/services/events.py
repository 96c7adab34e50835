"""Job progress events on Redis pub/sub (channel ``{prefix}job:{id}``).

Workers publish with the sync client; the SSE endpoint subscribes with the async one. Without
Redis (embedded default) publishing is a no-op and the SSE endpoint follows the job row instead.
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator
from functools import lru_cache
from typing import Any

import redis
from redis.asyncio import Redis as AsyncRedis

from app.config import Settings
from app.storage.kv import redis_options

log = logging.getLogger("picfilter.events")


def channel(settings: Settings, job_id: uuid.UUID | str) -> str:
    return f"{settings.redis_key_prefix}job:{job_id}"


@lru_cache(maxsize=4)
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, **redis_options(sync=True))


def publish_job_event(settings: Settings, job_id: uuid.UUID, payload: dict[str, Any]) -> None:
    if not settings.redis_url:
        return
    try:
        message = json.dumps({"job_id": str(job_id), **payload}, default=str)
        _client(settings.redis_url).publish(channel(settings, job_id), message)
    except redis.RedisError:  # events are best effort; the job row stays the truth
        log.warning("could not publish event for job %s", job_id, exc_info=True)


class EventsUnavailable(Exception):
    """Redis pub/sub cannot be reached (or was lost): follow the job row instead."""


async def subscribe(settings: Settings, job_id: uuid.UUID) -> AsyncIterator[dict[str, Any]]:
    """The job's events as they are published (``{}`` every 15 s without one, for keep-alives);
    raises :class:`EventsUnavailable` when Redis cannot be reached or goes away."""
    assert settings.redis_url
    client = AsyncRedis.from_url(settings.redis_url, **redis_options())
    pubsub = client.pubsub()
    try:
        await pubsub.subscribe(channel(settings, job_id))
        while True:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=15.0)
            if msg is None:
                yield {}
                continue
            yield json.loads(msg["data"])
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        log.warning("job events of %s: pub/sub unavailable (%s)", job_id, exc)
        raise EventsUnavailable(str(exc)) from exc
    finally:
        with contextlib.suppress(redis.RedisError, OSError):
            await pubsub.unsubscribe()
        with contextlib.suppress(redis.RedisError, OSError):
            await pubsub.aclose()
        with contextlib.suppress(redis.RedisError, OSError):
            await client.aclose()
