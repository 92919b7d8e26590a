"""Batched inference on a real worker process and Redis: photos waiting are classified in one forward pass, a
worker killed mid-batch has every photo of the batch delivered again and applied once, and a bad photo in a
batch fails alone."""

import re
from decimal import Decimal

import pytest

from catalog.models import Product
from catalog.services.products import product_create
from classifier.models import ModelVersion, Prediction
from classifier.services.classification import classification_enqueue
from tests.e2e.slow_worker import pause_line, photos_line, slow_photos_env, slow_tasks_env
from tests.e2e.support import (
    BrokerQueues,
    Workers,
    photo_bytes,
    product_saved_without_queueing,
    wait_for,
)

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

DONE = (Product.Status.CLASSIFIED, Product.Status.NEEDS_REVIEW, Product.Status.FAILED)
FORWARD_PASS = re.compile(r"classified (\d+) photo\(s\) in one forward pass")
WITHIN_S = 60


def batch_env(size: int) -> dict[str, str]:
    # A long wait: a batch here is flushed by its size, so a slow shared machine cannot split it.
    return {"VITRINE_INFERENCE_BATCH_SIZE": str(size), "VITRINE_INFERENCE_BATCH_WAIT_MS": "1000"}


def wait_all_done(product_ids: list[int]) -> None:
    wait_for(
        lambda: Product.objects.filter(pk__in=product_ids, status__in=DONE).count() == len(product_ids),
        timeout_s=WITHIN_S,
        what=f"products {product_ids} to be classified",
    )


def forward_pass_sizes(log: str) -> list[int]:
    return [int(size) for size in FORWARD_PASS.findall(log)]


def test_photos_saved_while_the_worker_is_busy_are_classified_in_one_forward_pass(
    workers: Workers, active_model_version: ModelVersion, photo_upload
) -> None:
    workers.stop_all()
    worker = workers.start(
        app="tests.e2e.slow_worker",
        extra_env={**batch_env(5), **slow_tasks_env(classifier__tasks__classify_products=3)},
    )
    first = product_create(
        name="Busy 0", sku="BU-0", price=Decimal("10"), image=photo_upload("b0.png", seed=0)
    )
    wait_for(
        lambda: pause_line("classifier.tasks.classify_products", product_ids=[first.pk]) in worker.log(),
        timeout_s=WITHIN_S,
        what="the worker to be busy with the first product",
    )
    waiting = [
        product_create(
            name=f"Busy {n}", sku=f"BU-{n}", price=Decimal("10"), image=photo_upload(f"b{n}.png", seed=n)
        )
        for n in range(1, 6)
    ]

    wait_all_done([first.pk] + [product.pk for product in waiting])

    assert (
        pause_line("classifier.tasks.classify_products", product_ids=[p.pk for p in waiting]) in worker.log()
    )
    assert forward_pass_sizes(worker.log()) == [1, 5]
    for product in [first, *waiting]:
        assert workers.applied_count(product.pk) == 1
        assert Prediction.objects.filter(product=product, image_sha256=product.image_sha256).count() == 1


def test_a_worker_killed_mid_batch_has_every_photo_of_it_delivered_again_and_applied_once(
    workers: Workers, active_model_version: ModelVersion, broker_queues: BrokerQueues, photo_upload
) -> None:
    workers.stop_all()
    products = [
        product_create(
            name=f"Killed {n}", sku=f"KB-{n}", price=Decimal("10"), image=photo_upload(f"k{n}.png", seed=n)
        )
        for n in range(4)
    ]
    product_ids = [product.pk for product in products]
    dying = workers.start(app="tests.e2e.slow_worker", extra_env={**batch_env(4), **slow_photos_env(60)})
    wait_for(
        lambda: photos_line(product_ids) in dying.log(),
        timeout_s=WITHIN_S,
        what="the worker to start on the batch",
    )

    dying.kill()

    assert broker_queues.held_product_ids() == set(product_ids)
    # A death in a batch of several messages counts against none of its photos (which one killed it?).
    assert Product.objects.filter(pk__in=product_ids, classification_attempts=0).count() == 4
    survivor = workers.start(extra_env=batch_env(4))
    wait_all_done(product_ids)
    # Delivered again, each message is classified on its own: a photo that killed the batch dies alone.
    assert forward_pass_sizes(survivor.log()) == [1, 1, 1, 1]
    for product in Product.objects.filter(pk__in=product_ids):
        assert product.status in (Product.Status.CLASSIFIED, Product.Status.NEEDS_REVIEW)
        assert workers.applied_count(product.pk) == 1
        assert Prediction.objects.filter(product=product, image_sha256=product.image_sha256).count() == 1
    assert broker_queues.client.hlen("unacked") == 0


def test_a_bad_photo_in_a_batch_fails_only_itself(
    workers: Workers, active_model_version: ModelVersion
) -> None:
    workers.stop_all()
    good = [
        product_saved_without_queueing(name=f"good{n}", image_bytes=photo_bytes(seed=n)) for n in range(3)
    ]
    bad = product_saved_without_queueing(name="bad", image_bytes=b"these bytes are no picture")
    product_ids = [good[0].pk, bad.pk, good[1].pk, good[2].pk]
    assert classification_enqueue(product_ids=product_ids) == 4

    worker = workers.start(extra_env=batch_env(4))
    wait_all_done(product_ids)

    assert forward_pass_sizes(worker.log()) == [3]
    bad.refresh_from_db()
    assert bad.status == Product.Status.FAILED
    assert bad.classification_error
    assert not Prediction.objects.filter(product=bad).exists()
    for product in good:
        assert Product.objects.get(pk=product.pk).status in (
            Product.Status.CLASSIFIED,
            Product.Status.NEEDS_REVIEW,
        )
        assert workers.applied_count(product.pk) == 1
