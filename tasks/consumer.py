"""The broker consumer every worker runs: a lost Redis connection never ends the worker.

When the consumer loses Redis, Celery collects the connection, then closes it. kombu's collect
closes the channels newest first and stops at the first close that fails (Redis is down), then
drops the transport's client. The task channel can be left open: its own first close stops at its
outstanding BRPOP read when the loss showed on another socket, and the loop stops at a newer channel
(the remote-control channel, which Celery re-opens after a failed remote-control reply). The second
step closes it again: it drops its Redis pools, needs a new pool to restore its unacknowledged
messages, and building one reads the missing client -- ``AttributeError: 'NoneType' object has no
attribute 'hostname'``, which Celery counts as unrecoverable: the worker exits. Closing every
channel first, while the transport can still build clients, leaves collect nothing to strand.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.utils.threads import bound_open_broker_sockets, default_socket_timeout
from celery.worker.consumer import Consumer as CeleryConsumer
from celery.worker.consumer.consumer import COLLECT_SOCKET_TIMEOUT

log = logging.getLogger(__name__)


def close_lost_channels(connection: Any, timeout: float = COLLECT_SOCKET_TIMEOUT) -> int:
    """Close every channel of a connection whose broker went away; returns how many stayed open.

    Never raises: the broker is gone, so each close may fail, and the next one is tried anyway.
    """
    # The private attribute: the public property would build a fresh transport.
    transport = getattr(connection, "_transport", None)
    if transport is None:
        return 0
    bound_open_broker_sockets(connection, timeout)
    left = 0
    with default_socket_timeout(timeout):
        for channel in list(getattr(transport, "channels", None) or ()):
            # A first close can stop at the outstanding BRPOP read, before the channel counts as closed.
            for _ in range(2):
                if getattr(channel, "closed", True):
                    break
                try:
                    channel.close()
                except Exception as exc:  # noqa: BLE001 - the broker is unreachable: expected
                    log.debug("closing a channel of the lost broker connection: %r", exc)
            left += not getattr(channel, "closed", True)
    return left


class Consumer(CeleryConsumer):
    """Celery's consumer, tearing a lost connection down in an order that cannot crash the worker."""

    def on_connection_error_after_connected(self, exc: BaseException) -> None:
        left = close_lost_channels(self.connection)
        if left:
            log.info("%d channel(s) of the lost broker connection did not close", left)
        try:
            super().on_connection_error_after_connected(exc)
        except Exception:
            # The old connection is dropped either way; the consumer goes on to connect anew.
            log.exception("tearing down the lost broker connection failed; reconnecting anyway")
            self.connection = None
