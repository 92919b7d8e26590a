"""python manage.py fill_colors [--all]: names the dominant colours of products saved before colours were."""

from django.core.management.base import BaseCommand

from catalog.services.products import products_colors_fill


class Command(BaseCommand):
    help = (
        "Name the dominant colours of products that have none yet (saved before vitrine named colours); "
        "--all names them again for every product."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--all", action="store_true", help="every product, not only those without colours"
        )

    def handle(self, *args: object, **options: object) -> None:
        outcome = products_colors_fill(every_product=options["all"])
        self.stdout.write(f"colours named for {outcome.named} products")
        for problem in outcome.problems:
            self.stderr.write(problem)
