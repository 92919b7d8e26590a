"""What a killed worker had fetched: back to its queue when Redis still has it, else through the sweep."""

import io
import json
import time
from decimal import Decimal

import pytest
from django.core.management import call_command
from kombu import Exchange, Queue

from catalog.models import Product
from catalog.services.products import product_create
from classifier.models import ModelVersion
from classifier.workers import recovery
from config.celery_app import app
from tests.e2e.slow_worker import slow_tasks_env
from tests.e2e.support import BrokerQueues, Workers, wait_for

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


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_photo_a_killed_workers_pending_read_took_is_gone_from_redis_and_the_sweep_classifies_it_once(
    workers: Workers, active_model_version: ModelVersion, broker_queues: BrokerQueues, photo_upload
) -> None:
    """kombu's Redis transport pops a message (BRPOP) before it records the delivery, and a solo worker's
    read waits while its task runs. A worker killed then takes the popped message with it: recovery cannot
    give back what Redis no longer has, and the product waits for beat's sweep."""
    workers.stop_all()
    worker = workers.start(
        app="tests.e2e.slow_worker", extra_env=slow_tasks_env(classifier__tasks__classify_products=5)
    )
    in_hand = product_create(
        name="In hand", sku="RC-1", price=Decimal("1"), image=photo_upload("a.png", seed=1)
    )
    wait_for(
        lambda: in_hand.pk in broker_queues.held_product_ids(), timeout_s=30, what="the first photo held"
    )
    unread = product_create(
        name="Unread", sku="RC-2", price=Decimal("1"), image=photo_upload("b.png", seed=2)
    )
    wait_for(
        lambda: broker_queues.length("inference") == 0,
        timeout_s=5,
        what="the worker's read to take the message",
    )
    worker.kill()

    assert broker_queues.held_product_ids() == {in_hand.pk}
    assert broker_queues.length("inference") == 0
    workers.running()
    wait_for(
        lambda: (
            Product.objects.get(pk=in_hand.pk).status not in (Product.Status.PENDING, Product.Status.QUEUED)
        ),
        timeout_s=60,
        what="the photo the dead worker held to be classified after its recovery",
    )
    assert Product.objects.get(pk=unread.pk).status == Product.Status.QUEUED

    output = io.StringIO()
    call_command("sweep_stuck", "--older-than", "0", stdout=output)

    assert output.getvalue() == "1 stuck products sent to the queue again.\n"
    wait_for(
        lambda: workers.applied_count(unread.pk) == 1, timeout_s=60, what="the swept photo to be classified"
    )
    assert workers.applied_count(in_hand.pk) == 1
