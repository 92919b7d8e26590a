"""python manage.py sweep_stuck: send again the products left pending or queued too long (beat does too)."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from classifier.services.classification import products_sweep_stuck


class Command(BaseCommand):
    help = "Re-enqueue products stuck in pending or queued longer than VITRINE_STUCK_AFTER_SECONDS."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            type=int,
            default=None,
            metavar="SECONDS",
            help=f"default: VITRINE_STUCK_AFTER_SECONDS ({settings.VITRINE_STUCK_AFTER_SECONDS})",
        )

    def handle(self, *args: object, **options: object) -> None:
        if options["older_than"] is not None and options["older_than"] < 0:
            raise CommandError(f"--older-than must be 0 or more seconds, not {options['older_than']}")
        sent = products_sweep_stuck(older_than_s=options["older_than"])
        self.stdout.write(f"{sent} stuck products sent to the queue again.")
