"""A message fetched by a worker killed before it noted holding it (no holder) goes back to its queue."""

import json
import time

from django.conf import settings

from classifier.workers import recovery
from config.celery_app import app
from tests.e2e.support import BrokerQueues, Workers


def unacked(client, channel, *, tag: str, queue: str, fetched_s_ago: float) -> None:
    message = {"body": "{}", "headers": {}, "properties": {"delivery_tag": tag, "delivery_info": {}}}
    # As Celery routes a task: the queue's own direct exchange, the queue's name as routing key.
    client.hset(channel.unacked_key, tag, json.dumps([message, queue, queue]))
    client.zadd(channel.unacked_index_key, {tag: time.time() - fetched_s_ago})


def test_an_old_inference_message_nobody_holds_is_given_back_and_the_others_wait(
    workers: Workers, broker_queues: BrokerQueues
) -> None:
    # No worker of the session may give the message back (or take it) first.
    workers.stop_all()
    connection = app.connection_for_write()
    watch = recovery.DeliveryWatch(
        connection=connection, hostname="test", queue=settings.VITRINE_INFERENCE_QUEUE
    )
    channel = watch.channel
    client = channel.client
    try:
        unacked(client, channel, tag="orphan", queue=settings.VITRINE_INFERENCE_QUEUE, fetched_s_ago=60)
        unacked(client, channel, tag="just-fetched", queue=settings.VITRINE_INFERENCE_QUEUE, fetched_s_ago=1)
        unacked(client, channel, tag="other-queue", queue=settings.VITRINE_JOBS_QUEUE, fetched_s_ago=60)

        given_back = watch.restore_dead_holders()

        assert given_back == 1
        assert broker_queues.length(settings.VITRINE_INFERENCE_QUEUE) == 1
        assert sorted(key.decode() for key in client.hkeys(channel.unacked_key)) == [
            "just-fetched",
            "other-queue",
        ]
    finally:
        client.delete(channel.unacked_key, channel.unacked_index_key)
        broker_queues.clear()
        connection.release()
