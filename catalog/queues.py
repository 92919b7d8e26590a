"""Sending work to the Celery queues by task name, so web processes never import the tasks (or TensorFlow).

The queue of each task comes from CELERY_TASK_ROUTES. The classifier sends its tasks through this too
(classifier.services.dispatch names them).
"""

import logging

from celery import current_app

logger = logging.getLogger(__name__)


def task_send(name: str, *, unsent: str, options: dict | None = None, **kwargs: object) -> bool:
    """Publishes the task (with send_task `options`, e.g. countdown); False when the broker cannot be reached,
    logging `unsent` (what waits now).

    Never raises: a row left waiting is found by the sweeps, so every failure to publish means the same thing.
    """
    try:
        current_app.send_task(name, kwargs=kwargs, **(options or {}))
    except Exception as error:  # Any failure to publish means the same thing: the sweep must send it later.
        logger.warning("%s: cannot reach the broker (%s)", unsent, error)
        return False
    return True
