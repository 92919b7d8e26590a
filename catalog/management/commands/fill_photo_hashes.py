"""python manage.py fill_photo_hashes: hashes the photos of products saved before photos were hashed."""

from django.core.management.base import BaseCommand

from catalog.services.duplicates import products_photo_hashes_fill


class Command(BaseCommand):
    help = (
        "Hash the photos of products that have no perceptual hash yet (saved before vitrine hashed photos) "
        "and flag those that look like a product hashed before them."
    )

    def handle(self, *args: object, **options: object) -> None:
        outcome = products_photo_hashes_fill()
        self.stdout.write(f"photos hashed for {outcome.hashed} products, {outcome.flagged} flagged")
        for problem in outcome.problems:
            self.stderr.write(problem)
