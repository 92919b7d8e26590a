"""A message fetched by a worker killed before it noted holding it (no holder) goes back to its queue."""

import json
import time

from kombu import Exchange, Queue

from classifier.workers import recovery
from config.celery_app import app
from tests.e2e.support import BrokerQueues

# A queue of this test's own: no worker of the session consumes it or gives its messages back.
WATCHED = "recovery-test"
OTHER = "recovery-test-other"


def unacked(client, channel, *, tag: str, queue: str, fetched_s_ago: float) -> None:
    message = {"body": "{}", "headers": {}, "properties": {"delivery_tag": tag, "delivery_info": {}}}
    # As Celery routes a task: the queue's own direct exchange, the queue's name as routing key.
    client.hset(channel.unacked_key, tag, json.dumps([message, queue, queue]))
    client.zadd(channel.unacked_index_key, {tag: time.time() - fetched_s_ago})


def test_an_old_message_nobody_holds_is_given_back_and_the_others_wait(broker_queues: BrokerQueues) -> None:
    connection = app.connection_for_write()
    watch = recovery.DeliveryWatch(connection=connection, hostname="test", queue=WATCHED)
    channel = watch.channel
    client = channel.client
    for name in (WATCHED, OTHER):
        Queue(name, Exchange(name, type="direct"), routing_key=name)(channel).declare()
    try:
        unacked(client, channel, tag="orphan", queue=WATCHED, fetched_s_ago=60)
        unacked(client, channel, tag="just-fetched", queue=WATCHED, fetched_s_ago=1)
        unacked(client, channel, tag="other-queue", queue=OTHER, fetched_s_ago=60)

        given_back = watch.restore_dead_holders()

        assert given_back == 1
        assert broker_queues.length(WATCHED) == 1
        waiting = sorted(key.decode() for key in client.hkeys(channel.unacked_key))
        assert {"just-fetched", "other-queue"} <= set(waiting) and "orphan" not in waiting
    finally:
        client.hdel(channel.unacked_key, "orphan", "just-fetched", "other-queue")
        client.zrem(channel.unacked_index_key, "orphan", "just-fetched", "other-queue")
        client.delete(WATCHED, OTHER)
        connection.release()
