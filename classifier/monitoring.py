"""What waits where: the broker's queues, products by status, rows stuck past the sweep timeout, the model.
Keras-free (manage.py queue_status)."""

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from celery import current_app
from django.conf import settings
from django.db.models import Count
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerOperationalError

from catalog.models import WAITING_STATUSES, Product
from classifier.models import BulkJob, ModelVersion, TrainingRun
from classifier.selectors import model_version_active


@dataclass(frozen=True)
class QueueCount:
    name: str
    # Messages waiting for a worker; None when the broker could not be read.
    waiting: int | None
    # Delivered to a worker and not acknowledged yet (running, or to be redelivered); None where unknown.
    delivered: int | None = None


@dataclass(frozen=True)
class QueueState:
    broker: str
    broker_error: str | None
    queues: list[QueueCount]
    products_by_status: dict[str, int]
    stuck: int
    stuck_after_s: int
    oldest_waiting_since: datetime | None
    active_version: ModelVersion | None
    training_runs_in_progress: int
    bulk_jobs_in_progress: int
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        active = self.active_version
        return {
            "broker": self.broker,
            "broker_error": self.broker_error,
            "queues": {
                queue.name: {"waiting": queue.waiting, "delivered": queue.delivered} for queue in self.queues
            },
            "products_by_status": self.products_by_status,
            "stuck": self.stuck,
            "stuck_after_s": self.stuck_after_s,
            "oldest_waiting_since": self.oldest_waiting_since.isoformat()
            if self.oldest_waiting_since
            else None,
            "active_version": (
                {"id": active.pk, "name": active.name, "architecture": active.architecture}
                if active
                else None
            ),
            "training_runs_in_progress": self.training_runs_in_progress,
            "bulk_jobs_in_progress": self.bulk_jobs_in_progress,
        }


def _delivered_per_queue(channel: object) -> dict[str, int] | None:
    """Redis keeps delivered, unacknowledged messages in one hash; count them by the queue they came from."""
    client = getattr(channel, "client", None)
    unacked_key = getattr(channel, "unacked_key", None)
    if client is None or unacked_key is None:
        return None
    counts: dict[str, int] = {}
    for raw in client.hvals(unacked_key):
        try:
            _, _, routing_key = json.loads(raw)
        except (ValueError, TypeError):
            continue
        counts[routing_key] = counts.get(routing_key, 0) + 1
    return counts


def _broker_queue_counts(queue_names: list[str]) -> tuple[str, list[QueueCount], str | None]:
    with current_app.connection_for_read() as connection:
        broker = connection.as_uri()
        try:
            connection.ensure_connection(max_retries=0)
            channel = connection.default_channel
            counts = []
            delivered = _delivered_per_queue(channel)
            for name in queue_names:
                try:
                    waiting = channel.queue_declare(queue=name, passive=True).message_count
                except connection.channel_errors:
                    # A queue nobody has sent to yet does not exist in the broker: nothing waits in it.
                    waiting = 0
                counts.append(
                    QueueCount(name, waiting, None if delivered is None else delivered.get(name, 0))
                )
            return broker, counts, None
        except (*connection.connection_errors, BrokerOperationalError) as error:
            return broker, [QueueCount(name, None) for name in queue_names], str(error)


def queue_state() -> QueueState:
    """What waits where: broker queues, products by status, rows stuck past the sweep timeout, the model."""
    queue_names = [
        settings.VITRINE_INFERENCE_QUEUE,
        settings.VITRINE_TRAINING_QUEUE,
        settings.VITRINE_JOBS_QUEUE,
    ]
    broker, queues, broker_error = _broker_queue_counts(queue_names)
    by_status = dict(Product.objects.values_list("status").annotate(count=Count("pk")).order_by())
    products_by_status = {value: by_status.get(value, 0) for value in Product.Status.values}
    stuck_after_s = settings.VITRINE_STUCK_AFTER_SECONDS
    waiting = Product.objects.filter(status__in=WAITING_STATUSES)
    oldest = waiting.order_by("status_changed_at").values_list("status_changed_at", flat=True).first()
    return QueueState(
        broker=broker,
        broker_error=broker_error,
        queues=queues,
        products_by_status=products_by_status,
        stuck=waiting.filter(status_changed_at__lt=timezone.now() - timedelta(seconds=stuck_after_s)).count(),
        stuck_after_s=stuck_after_s,
        oldest_waiting_since=oldest,
        active_version=model_version_active(),
        training_runs_in_progress=TrainingRun.objects.filter(
            status__in=(TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING)
        ).count(),
        bulk_jobs_in_progress=BulkJob.objects.filter(
            status__in=(BulkJob.Status.QUEUED, BulkJob.Status.RUNNING)
        ).count(),
    )
