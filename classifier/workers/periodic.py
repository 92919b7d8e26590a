"""Doing something every few seconds beside a long task, for as long as a with-block runs."""

import logging
import threading
from collections.abc import Callable

from django.db import connections

logger = logging.getLogger(__name__)


class Every:
    """Calls `tick()` every `interval_s` seconds in a daemon thread while the with-block runs.

    A tick that raises stops the ticking (logged once); the task in the with-block goes on. The thread closes
    its own database connection when it ends, since nothing else would.
    """

    def __init__(self, interval_s: float, tick: Callable[[], object], *, name: str) -> None:
        self._interval_s = interval_s
        self._tick = tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def __enter__(self) -> "Every":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        try:
            while not self._stop.wait(self._interval_s):
                self._tick()
        except Exception as error:  # Only the side job stops; the task it runs beside is not ours to fail.
            logger.warning("%s stopped: %s", self._thread.name, error)
        finally:
            connections.close_all()
