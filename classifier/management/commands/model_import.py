"""python manage.py model_import FILE [--name NAME] [--activate]: a model version exported by model_export."""

import pathlib

from django.core.management.base import BaseCommand, CommandError, CommandParser

from classifier.services.model_archives import ModelArchiveError, model_version_import
from classifier.services.model_versions import ModelVersionError


class Command(BaseCommand):
    help = (
        "Import a model version archive written by model_export: every file is checked against the "
        "manifest's size and sha256 (all together at most VITRINE_MODEL_IMPORT_MAX_BYTES), then the version "
        "is registered inactive (--activate: active). A damaged, altered or oversized archive is refused "
        "and leaves nothing behind."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("archive", type=pathlib.Path)
        parser.add_argument(
            "--name", default=None, help="register under this name (default: the exported one)"
        )
        parser.add_argument(
            "--activate", action="store_true", help="make it the active version (workers switch at once)"
        )

    def handle(self, *args: object, **options: object) -> None:
        try:
            model_version = model_version_import(
                archive_path=options["archive"], name=options["name"], activate=options["activate"]
            )
        except (ModelArchiveError, ModelVersionError) as error:
            raise CommandError(str(error)) from None
        state = "active" if model_version.is_active else "inactive; activate it in the admin"
        self.stdout.write(
            f"model version {model_version.name} imported ({model_version.architecture}, "
            f"{len(model_version.class_names)} categories, {state})"
        )
