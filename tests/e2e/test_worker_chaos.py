"""500 uploads while the inference worker is SIGKILLed three times and one photo kills it on every delivery.

Workers run with the production visibility timeout (two hours): what a dead worker held comes back quickly
through classifier.workers.recovery, not through Redis's own timeout or the sweep. The one thing recovery
cannot see is a message Redis had already handed to the dead worker's pending read (kombu's Redis transport
pops a message before it records the delivery): gone from Redis, its product waits for beat's sweep, which
this test runs as beat would once nothing is left in the queue or held (tests/e2e/test_recovery.py shows it
on one photo).
"""

import collections
import io
import re
import threading
import time
from datetime import datetime
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.utils import timezone

from catalog.models import WAITING_STATUSES, Product
from catalog.services.products import product_create
from classifier.models import BulkJob, ModelVersion
from tests.e2e.slow_worker import FATAL_SKU_ENV, slow_tasks_env
from tests.e2e.support import BrokerQueues, CeleryWorker, Workers, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

UPLOADS = 500
KILL_AFTER_UPLOADS = (120, 250, 380)
POISON_SKU = "CH-50"
MAX_DELIVERIES = 2
APPLIED = re.compile(r"classification applied: product (\d+) ")


def messages_in_redis(broker_queues: BrokerQueues) -> bool:
    return broker_queues.length("inference") > 0 or broker_queues.client.hlen("unacked") > 0


def products_lost_from_redis(broker_queues: BrokerQueues, *, timeout_s: float) -> set[int]:
    """Waits until every product is done, or no message has been in the queue or held for 3 s (a live worker
    records what it fetched as soon as its task in hand ends); returns the products still waiting then: those
    whose message a killed worker's pending read had taken."""
    deadline = time.monotonic() + timeout_s
    quiet_since = None
    while time.monotonic() < deadline:
        waiting = set(Product.objects.filter(status__in=WAITING_STATUSES).values_list("pk", flat=True))
        if not waiting:
            return set()
        if messages_in_redis(broker_queues):
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= 3:
            return waiting
        time.sleep(0.5)
    raise AssertionError(
        f"timed out after {timeout_s} s waiting for every product to be classified or failed, "
        "or for no message left in Redis"
    )


class Supervisor:
    """Starts a worker whenever none runs (as docker's restart policy would) and notes each restart."""

    def __init__(self, workers: Workers, broker_queues: BrokerQueues, env: dict[str, str]) -> None:
        self.workers, self.broker_queues, self.env = workers, broker_queues, env
        self.current: CeleryWorker | None = None
        # (when the new worker was up, the products its dead predecessor held)
        self.restarts: list[tuple[datetime, set[int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Supervisor":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.current is None or not self.current.is_running():
                held = self.broker_queues.held_product_ids()
                try:
                    self.current = self.workers.start(app="tests.e2e.slow_worker", extra_env=self.env)
                except AssertionError:
                    continue  # it died on the fatal photo before it said it was ready
                self.restarts.append((timezone.now(), held))
            time.sleep(0.05)

    def kill_while_it_holds_a_message(self, *, spare: set[int]) -> set[int]:
        """SIGKILLs the worker while it holds a photo none of `spare`; returns the products it held.

        Sparing the photos killed before keeps the test to its story: each of them dies once here, so only
        the poison photo reaches the delivery limit.
        """
        worker = wait_for(
            lambda: self.current if self.current and self.current.is_running() else None,
            timeout_s=120,
            what="a running worker",
        )

        def fresh_photo_in_hand() -> set[int]:
            # Photos killed before may be held beside fresh ones (a batch); a death in a batch of several
            # counts against none of them, so only the fresh ones are this kill's.
            return self.broker_queues.held_product_ids() - spare

        held = wait_for(
            fresh_photo_in_hand, timeout_s=60, what="a delivered message of a photo not killed before"
        )
        if worker.is_running():
            worker.kill()
        return held


def test_uploads_through_three_worker_kills_and_a_photo_that_kills_its_worker(
    workers: Workers, active_model_version: ModelVersion, broker_queues: BrokerQueues, photo_upload
) -> None:
    workers.stop_all()
    env = {
        "CELERY_VISIBILITY_TIMEOUT": "7200",
        "VITRINE_MAX_DELIVERIES": str(MAX_DELIVERIES),
        FATAL_SKU_ENV: POISON_SKU,
        # A batching worker drains what waits at once; a pause per batch keeps messages in its hands to kill.
        **slow_tasks_env(classifier__tasks__classify_products=0.3),
    }
    started = time.monotonic()
    workers_before = len(workers.started)
    killed: set[int] = set()
    with Supervisor(workers, broker_queues, env) as supervisor:
        for number in range(UPLOADS):
            product_create(
                name=f"Chaos {number}",
                sku=f"CH-{number}",
                price=Decimal("10"),
                image=photo_upload(f"chaos{number}.png", seed=number),
            )
            if number in KILL_AFTER_UPLOADS:
                poison_ids = set(Product.objects.filter(sku=POISON_SKU).values_list("pk", flat=True))
                killed |= supervisor.kill_while_it_holds_a_message(spare=killed | poison_ids)
        uploaded_s = time.monotonic() - started
        lost = products_lost_from_redis(broker_queues, timeout_s=240)
        # Every worker started here but the one running (some died on the poison photo before they were up).
        deaths = len(workers.started) - workers_before - 1
        # A death loses at most the one message its pending read had taken (BRPOP pops one).
        assert len(lost) <= deaths, f"{len(lost)} products lost from Redis by {deaths} worker deaths"
        if lost:
            call_command("sweep_stuck", "--older-than", "0", stdout=io.StringIO())
        wait_for(
            lambda: not Product.objects.filter(status__in=WAITING_STATUSES).exists(),
            timeout_s=120,
            what="every product to be classified or failed",
        )
    all_done_s = time.monotonic() - started

    applied = collections.Counter(int(product_id) for product_id in APPLIED.findall(workers.logs()))
    poison = Product.objects.get(sku=POISON_SKU)
    others = Product.objects.exclude(pk=poison.pk)
    assert others.count() == UPLOADS - 1
    assert set(others.values_list("status", flat=True)) <= {
        Product.Status.CLASSIFIED,
        Product.Status.NEEDS_REVIEW,
    }
    assert {product_id: applied[product_id] for product_id in others.values_list("pk", flat=True)} == {
        product_id: 1 for product_id in others.values_list("pk", flat=True)
    }
    assert poison.status == Product.Status.FAILED
    assert poison.classification_error.startswith(f"The worker died {MAX_DELIVERIES} times on this photo")
    assert applied[poison.pk] == 0
    # A worker that died mid-batch also held messages of photos it had classified: given back, each is acked
    # as a duplicate.
    wait_for(
        lambda: broker_queues.length("inference") == 0 and broker_queues.client.hlen("unacked") == 0,
        timeout_s=30,
        what="no message left in the queue or unacknowledged",
    )
    assert not BulkJob.objects.filter(status=BulkJob.Status.RUNNING).exists()

    changed_at = dict(others.values_list("pk", "status_changed_at"))
    # A photo may be held through several deaths (a kill while it waits beside a fresh photo, or beside the
    # poison photo): each death's recovery is timed from the restart after it, so a photo's wait runs from the
    # last restart that gave it back before its classification.
    last_given_back: dict[int, datetime] = {}
    for up_at, held in supervisor.restarts:
        for product_id in held:
            if product_id in changed_at and up_at <= changed_at[product_id]:
                last_given_back[product_id] = up_at
    waits_s = [
        (changed_at[product_id] - up_at).total_seconds() for product_id, up_at in last_given_back.items()
    ]
    kills = len(supervisor.restarts) - 1
    print(
        f"\n{UPLOADS} uploads in {uploaded_s:.1f} s, all done after {all_done_s:.1f} s; "
        f"{kills} worker deaths; "
        f"{len(lost)} sent again by the sweep (taken by a dead worker's unread fetch); "
        f"{len(waits_s)} photos held by a dead worker; longest wait from the restart to the classification: "
        f"{max(waits_s, default=0):.1f} s"
    )
    assert kills >= len(KILL_AFTER_UPLOADS)
    assert waits_s
    assert max(waits_s) <= 20
