"""python manage.py queue_status [--json]: what waits where, and whether anything is stuck."""

import json

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from classifier.monitoring import QueueState, queue_state


def format_queue_state(state: QueueState) -> list[str]:
    lines = [
        f"broker: {state.broker}" + (f" (unreachable: {state.broker_error})" if state.broker_error else "")
    ]
    for queue in state.queues:
        if queue.waiting is None:
            lines.append(f"queue {queue.name}: unknown, the broker is unreachable")
            continue
        delivered = "" if queue.delivered is None else f", {queue.delivered} delivered to a worker"
        lines.append(f"queue {queue.name}: {queue.waiting} waiting{delivered}")
    total = sum(state.products_by_status.values())
    counts = ", ".join(f"{status} {count}" for status, count in state.products_by_status.items())
    lines.append(f"products: {counts} ({total} in all)")
    stuck = f"stuck (pending or queued longer than {state.stuck_after_s} s): {state.stuck}"
    if state.stuck:
        stuck += " - python manage.py sweep_stuck sends them again (beat does every minute or so)"
    lines.append(stuck)
    if state.oldest_waiting_since is not None:
        lines.append(f"oldest waiting product since: {state.oldest_waiting_since:%Y-%m-%d %H:%M:%S %Z}")
    active = state.active_version
    lines.append(
        f"active model version: {active.name} (id {active.pk}, {active.architecture}, "
        f"{len(active.class_names)} categories)"
        if active
        else "active model version: none - products wait until one is activated"
    )
    lines.append(
        f"training runs in progress: {state.training_runs_in_progress}; "
        f"bulk re-classifications in progress: {state.bulk_jobs_in_progress}"
    )
    return lines


class Command(BaseCommand):
    help = (
        "Show the broker's inference and training queues, products by status, products stuck longer than "
        "VITRINE_STUCK_AFTER_SECONDS and the active model version. Exits 1 when the broker is unreachable."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="one JSON object, for scripts")

    def handle(self, *args: object, **options: object) -> None:
        try:
            state = queue_state()
        except DatabaseError as error:
            raise CommandError(f"the database is unreachable: {' '.join(str(error).split())}") from None
        if options["json"]:
            self.stdout.write(json.dumps(state.as_dict(), indent=2, sort_keys=True))
        else:
            for line in format_queue_state(state):
                self.stdout.write(line)
        if state.broker_error:
            raise CommandError(f"the broker is unreachable: {state.broker_error}")
