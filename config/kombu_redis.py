"""A guard for kombu's Redis transport: a channel whose connection is already closed fails
like a lost connection (which Celery recovers from), not with ``AttributeError`` (which
kills the worker).

Why (kombu 5.7.0, celery 5.7.0; the same code since kombu 5.3.4, the floor). When Redis
goes away, Celery's ``Consumer.on_connection_error_after_connected`` calls
``connection.collect()`` and then ``connection.close()`` under ``ignore_errors`` (which
ignores connection errors only):

1. ``collect()`` → ``Connection._do_close_self`` closes the default channel (the task
   consumer's) first. If a ``BRPOP`` was in flight on it (the error was read first on
   another socket, e.g. the pidbox's pub/sub one), redis ``Channel.close`` starts by
   reading that reply (``if self._in_poll: self._brpop_read()``), which raises a
   connection error *before* the channel is marked closed; ``maybe_close_channel``
   swallows it.
2. ``Transport.close_connection`` then closes the other channels, last created first. The
   pidbox/gossip channel's close deletes its auto-delete fanout queue on the dead
   server and raises; the loop stops before it reaches the default channel.
3. ``_do_close_transport`` sets ``transport.client = None``: the default channel is still
   open, and still points at that transport.
4. ``connection.close()`` closes the default channel again. This time it gets through to
   ``virtual.Channel.close`` → ``QoS.restore_unacked_once``, and, when the channel holds
   unacknowledged messages, to ``restore_unacked`` → ``conn_or_acquire`` → a new pool →
   ``Channel._connparams``, which reads ``self.connection.client.hostname``: the
   ``AttributeError`` escapes ``ignore_errors`` and Celery stops with "Unrecoverable
   error".

A plain Celery worker holds no unacknowledged messages between tasks, so
``restore_unacked_once`` returns before step 4 and it reconnects. flexpipe's worker always
holds some (``task_acks_late`` and countdown polls waiting in the worker), so it takes
this path whenever the race in step 1 goes that way.

The guard: ``_connparams`` on a channel whose transport is gone (``connection`` or
``connection.client`` is ``None``) raises ``redis.exceptions.ConnectionError``, one of the
transport's ``connection_errors``. It changes nothing for a live channel: the original
would have raised ``AttributeError`` there. The messages that restore could not put back
are not lost for flexpipe: when Redis kept its data they are still in its ``unacked``
hash and come back after the visibility timeout, and either way the sweeper re-sends every
poll and submit that SQL says is due. ``tests/faults/test_redis_restart_worker.py``
restarts Redis under a real worker and checks both.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

_MARK = "_flexpipe_detached_guard"


def install() -> None:
    """Wrap ``kombu.transport.redis.Channel._connparams`` once (idempotent)."""
    import redis.exceptions
    from kombu.transport import redis as kombu_redis

    original: Callable[..., Any] = kombu_redis.Channel._connparams
    if getattr(original, _MARK, False):
        return

    @functools.wraps(original)
    def _connparams(self: Any, asynchronous: bool = False) -> Any:
        transport = self.connection
        if transport is None or transport.client is None:
            if not getattr(self, _MARK, False):  # once per channel: acks come here too
                setattr(self, _MARK, True)
                qos = getattr(self, "_qos", None)
                logger.warning(
                    "Redis channel used after its connection was closed: its %d "
                    "unacknowledged message(s) are not restored now (Redis redelivers those "
                    "it kept after the visibility timeout; the sweeper re-sends due work "
                    "from SQL)",
                    len(qos._delivered) if qos is not None else 0,
                )
            raise redis.exceptions.ConnectionError(
                "kombu redis channel used after its connection was closed"
            )
        return original(self, asynchronous=asynchronous)

    setattr(_connparams, _MARK, True)
    kombu_redis.Channel._connparams = _connparams  # type: ignore[method-assign]

