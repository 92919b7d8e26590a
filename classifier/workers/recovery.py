"""Giving a dead inference worker's messages back to their queue within seconds (Redis broker only).

Redis hands an unacknowledged message out again only after the visibility timeout (hours: longer than any
task). So each solo inference worker notes which worker holds each message it receives (delivery tag ->
holder) and keeps a key saying it is alive, refreshed from a thread that runs even while a task blocks the
worker. The same thread puts back, at the head of their queue, the unacknowledged messages whose holder's key
has expired: a dead worker's. Messages of a live worker are left alone. Every worker that consumes the
inference queue notes what it holds (prefork ones too, in their parent); a message of that queue with no
holder noted ORPHAN_AFTER_S after its delivery was fetched by a worker killed before it could note it (the
instant between Redis handing it over and the worker receiving it), and is given back too. Messages of
other queues without a holder wait for the visibility timeout. Other brokers: nothing is done.

What this cannot give back: kombu's Redis transport pops a message (BRPOP) before it records the delivery,
and a solo worker reads the reply only when its task in hand ends. A worker killed in between takes that one
message out of Redis with it (tests/e2e/test_recovery.py); its product waits for beat's sweep
(VITRINE_STUCK_AFTER_SECONDS).
"""

import json
import logging
import os
import threading
import time
import uuid

from celery import Celery
from kombu import Connection

logger = logging.getLogger(__name__)

HOLDER_KEY = "vitrine:delivery-holder:{tag}"
ALIVE_KEY = "vitrine:worker-alive:{holder}"
# A holder whose key is this old is dead; the check runs often enough to keep a live one's key fresh.
ALIVE_FOR_S = 4
CHECK_EVERY_S = 1.0
# A live worker notes a message within milliseconds of fetching it; one unnoted for this long has no holder.
ORPHAN_AFTER_S = 8.0


class DeliveryWatch:
    """This worker process's notes on the messages it holds, and the thread that keeps them and recovers."""

    def __init__(self, *, connection: Connection, hostname: str, queue: str) -> None:
        self.connection = connection
        self.queue = queue
        self.channel = connection.default_channel
        # The process, not the host name: a restarted worker keeps its host name but holds nothing.
        self.holder = f"{hostname}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._thread = threading.Thread(target=self._run, name="delivery-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def held(self, delivery_tag: str) -> None:
        with self.channel.conn_or_acquire() as client:
            client.set(HOLDER_KEY.format(tag=delivery_tag), self.holder, ex=self.channel.visibility_timeout)

    def _keep_alive(self) -> None:
        with self.channel.conn_or_acquire() as client:
            client.set(ALIVE_KEY.format(holder=self.holder), "1", ex=ALIVE_FOR_S)

    def restore_dead_holders(self) -> int:
        """Puts back each unacknowledged message whose holder is dead; returns how many."""
        with self.channel.conn_or_acquire() as client:
            tags = [tag.decode() for tag in client.hkeys(self.channel.unacked_key)]
            holders = client.mget([HOLDER_KEY.format(tag=tag) for tag in tags]) if tags else []
            known = [(tag, holder.decode()) for tag, holder in zip(tags, holders, strict=True) if holder]
            alive = client.mget([ALIVE_KEY.format(holder=holder) for _tag, holder in known]) if known else []
            dead = [tag for (tag, _holder), is_alive in zip(known, alive, strict=True) if not is_alive]
            unnoted = [tag for tag, holder in zip(tags, holders, strict=True) if not holder]
            dead += self._orphans(client, unnoted)
            for tag in dead:
                # The head of the queue: they were delivered first, and have waited long enough.
                self.channel.qos.restore_by_tag(tag, client)
        if dead:
            logger.warning("gave back %s message(s) held by dead workers: %s", len(dead), dead)
        return len(dead)

    def _orphans(self, client: object, tags: list[str]) -> list[str]:
        """The inference messages among `tags` (none with a holder) fetched more than ORPHAN_AFTER_S ago."""
        if not tags:
            return []
        fetched_at = client.zmscore(self.channel.unacked_index_key, tags)
        old = [
            tag for tag, at in zip(tags, fetched_at, strict=True) if at and at < time.time() - ORPHAN_AFTER_S
        ]
        orphans = []
        for tag, payload in zip(old, client.hmget(self.channel.unacked_key, old) if old else [], strict=True):
            # kombu keeps [message, exchange, routing key]; the routing key is the queue's name here.
            if payload and json.loads(payload)[2] == self.queue:
                orphans.append(tag)
        return orphans

    def _run(self) -> None:
        while True:
            try:
                self._keep_alive()
                self.restore_dead_holders()
            except self.connection.connection_errors as error:
                # The broker is away; the worker's own reconnecting says so, and the next check retries.
                logger.info("delivery watch: broker unreachable (%s)", error)
            time.sleep(CHECK_EVERY_S)


_watch: DeliveryWatch | None = None


def delivery_watch_start(*, app: Celery, hostname: str, queue: str) -> bool:
    """Starts this worker's watch of the messages of `queue` it holds when the broker is Redis; returns
    whether it did."""
    global _watch
    connection = app.connection_for_write()
    if connection.transport.driver_type != "redis":
        connection.release()
        return False
    _watch = DeliveryWatch(connection=connection, hostname=hostname, queue=queue)
    _watch.start()
    return True


def delivery_held(delivery_tag: str | None) -> None:
    """This worker received the message with this tag (a no-op where no watch runs)."""
    if _watch is not None and delivery_tag:
        _watch.held(delivery_tag)
