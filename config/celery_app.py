"""The Celery app: configured from Django settings (CELERY_* names), tasks found in the installed apps.

Start a worker with DJANGO_SETTINGS_MODULE set (manage.py run does it for a laptop), e.g.
    DJANGO_SETTINGS_MODULE=config.settings.local celery -A config.celery_app worker --pool solo -Q inference
There is deliberately no default here: config/__init__ imports this module before wsgi.py picks its settings.
"""

import pathlib

from celery import Celery

app = Celery("vitrine")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_configure.connect
def _filesystem_broker_folders(sender: Celery, **kwargs: object) -> None:
    # The embedded broker's folders must exist before the first message is written or read.
    if str(sender.conf.broker_url).startswith("filesystem:"):
        options = sender.conf.broker_transport_options
        for key in ("data_folder_in", "data_folder_out", "control_folder"):
            pathlib.Path(options[key]).mkdir(parents=True, exist_ok=True)


@app.on_after_configure.connect
def _sweep_schedule(sender: Celery, **kwargs: object) -> None:
    from django.conf import settings

    # Twice per timeout, so a stuck row waits at most one and a half timeouts.
    sender.conf.beat_schedule = {
        "sweep-stuck-products": {
            "task": "classifier.tasks.sweep_stuck_products",
            "schedule": max(10.0, settings.VITRINE_STUCK_AFTER_SECONDS / 2),
        },
        # Training runs whose worker died, and bulk re-classifications that stalled, are picked up here.
        "sweep-background-jobs": {
            "task": "classifier.tasks.sweep_background_jobs",
            "schedule": 60.0,
        },
        # A day on which the active model files far fewer photos than it did on its validation photos.
        "record-drift-alerts": {
            "task": "classifier.tasks.record_drift_alerts",
            "schedule": 900.0,
        },
        # Webhook deliveries whose message was lost (a broker outage) are sent again from here.
        "sweep-webhook-deliveries": {
            "task": "catalog.tasks.sweep_webhook_deliveries",
            "schedule": 60.0,
        },
        # Product imports whose chunk message was lost (on the jobs queue).
        "sweep-product-imports": {
            "task": "catalog.tasks.sweep_product_imports",
            "schedule": 60.0,
        },
    }
