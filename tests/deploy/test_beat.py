"""The beat service's command from docker-compose.yml and its healthcheck (a schedule file written lately)."""

import os
import pathlib
import subprocess
import time

from django.conf import settings

from tests.deploy.support import (
    REPO_ROOT,
    healthcheck_command,
    on_this_machine,
    production_environment,
    service_command,
)
from tests.e2e.support import BrokerQueues, wait_for

COMPOSE_SCHEDULE = "/data/beat/celerybeat-schedule"


def test_beat_sends_the_sweep_and_its_probe_tells_a_live_beat_from_a_silent_one(
    tmp_path: pathlib.Path,
) -> None:
    schedule = tmp_path / "celerybeat-schedule"
    queues = BrokerQueues(settings.CELERY_BROKER_URL)
    queues.clear()
    # The sweep then runs every 10 s (every half of it), so the first one is due soon.
    environment = production_environment(VITRINE_STUCK_AFTER_SECONDS="20")
    command = [part.replace(COMPOSE_SCHEDULE, str(schedule)) for part in service_command("beat")]
    probe = on_this_machine(
        [part.replace(COMPOSE_SCHEDULE, str(schedule)) for part in healthcheck_command("beat")]
    )
    beat_log = tmp_path / "beat.log"
    with beat_log.open("wb") as log:
        beat = subprocess.Popen(
            on_this_machine(command), cwd=REPO_ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        # Beat's own log, not the queue: a worker elsewhere on this broker may already have taken the task.
        wait_for(
            lambda: "Sending due task sweep-stuck-products" in beat_log.read_text(errors="replace"),
            timeout_s=90,
            what="beat to send the first sweep",
            interval_s=0.2,
        )
    finally:
        beat.terminate()
        beat.wait(timeout=30)
        queues.clear()

    live = subprocess.run(probe, cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)
    long_ago = time.time() - 3600
    for path in tmp_path.glob("celerybeat-schedule*"):
        os.utime(path, (long_ago, long_ago))
    silent = subprocess.run(probe, cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)

    assert live.returncode == 0, live.stderr
    assert silent.returncode == 1
    assert "last written 3600 s ago (more than 900 s)" in silent.stderr
