"""The production Celery app with a pause before chosen tasks, for tests that kill a worker mid-task.

Start a worker with `-A tests.e2e.slow_worker` and VITRINE_SLOW_TASKS="task.name=seconds[,...]"; each pause is
logged (pause_line) before it begins, so the test knows the task is in hand when it kills the worker.
With VITRINE_SLOW_PHOTOS="seconds" it pauses instead just before the model looks at the photos, after the
delivery was counted on the products (photos_line), as a photo that kills its worker would.
With VITRINE_FATAL_SKU="SKU" the worker kills itself (SIGKILL) whenever it reads that product's photo.
"""

import json
import logging
import os
import signal
import time

from celery.signals import task_prerun
from celery_batches import Batches

from config.celery_app import app

SLOW_TASKS_ENV = "VITRINE_SLOW_TASKS"
SLOW_PHOTOS_ENV = "VITRINE_SLOW_PHOTOS"
FATAL_SKU_ENV = "VITRINE_FATAL_SKU"
logger = logging.getLogger(__name__)


def pause_line(task_name: str, **kwargs: object) -> str:
    return f"pausing before {task_name}({json.dumps(kwargs, sort_keys=True)})"


def slow_tasks_env(**delays_s: float) -> dict[str, str]:
    """The worker environment that pauses each named task (dots as __ in the keyword) so many seconds."""
    return {SLOW_TASKS_ENV: ",".join(f"{name.replace('__', '.')}={s}" for name, s in delays_s.items())}


def photos_line(product_ids: list[int]) -> str:
    return f"pausing before classifying the photos of products {product_ids}"


def slow_photos_env(seconds: float) -> dict[str, str]:
    return {SLOW_PHOTOS_ENV: str(seconds)}


_delays_s = {
    name: float(seconds)
    for name, _, seconds in (item.partition("=") for item in os.environ.get(SLOW_TASKS_ENV, "").split(","))
    if name
}


@task_prerun.connect
def _pause(
    sender: object = None, task: object = None, args: tuple = (), kwargs: dict | None = None, **extra: object
) -> None:
    delay_s = _delays_s.get(task.name)
    if delay_s:
        if isinstance(task, Batches):  # its one argument: the requests of the messages in the batch
            kwargs = {"product_ids": [pk for request in args[0] for pk in request.kwargs["product_ids"]]}
        logger.warning(pause_line(task.name, **(kwargs or {})))
        time.sleep(delay_s)


_photos_delay_s = float(os.environ.get(SLOW_PHOTOS_ENV) or 0)


@task_prerun.connect
def _pause_before_the_photos(task: object = None, **extra: object) -> None:
    if not _photos_delay_s or task.name != "classifier.tasks.classify_products":
        return
    from classifier.workers import inference  # the task imports it too, in this (solo) serving process

    classify = inference.products_classify
    if getattr(classify, "paused", False):
        return

    def paused(*, product_ids: list[int]) -> object:
        logger.warning(photos_line(product_ids))
        time.sleep(_photos_delay_s)
        return classify(product_ids=product_ids)

    paused.paused = True
    inference.products_classify = paused


_fatal_sku = os.environ.get(FATAL_SKU_ENV, "")


@task_prerun.connect
def _die_on_the_fatal_photo(task: object = None, **extra: object) -> None:
    if not _fatal_sku or task.name != "classifier.tasks.classify_products":
        return
    from classifier.workers import inference  # the task imports it too, in this (solo) serving process

    read_photo = inference._read_photo
    if getattr(read_photo, "fatal", False):
        return

    def fatal(product: object) -> object:
        if product.sku == _fatal_sku:
            os.kill(os.getpid(), signal.SIGKILL)
        return read_photo(product)

    fatal.fatal = True
    inference._read_photo = fatal


__all__ = ["app"]
