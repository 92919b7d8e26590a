"""python manage.py model_export [NAME] [--out FILE]: a version's files and checksums in one .tar.gz."""

import pathlib

from django.core.management.base import BaseCommand, CommandError, CommandParser

from classifier.models import ModelVersion
from classifier.services.model_archives import ModelArchiveError, model_version_export


class Command(BaseCommand):
    help = (
        "Export a model version (its model.keras, metadata and evaluation files, and a manifest with the "
        "sha256 of each) as a .tar.gz that model_import reads on another server. Refuses a corrupt version."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", nargs="?", help="the version's name (default: the active version)")
        parser.add_argument(
            "--out", type=pathlib.Path, default=None, help="the archive to write (default: ./NAME.tar.gz)"
        )

    def handle(self, *args: object, **options: object) -> None:
        if options["name"]:
            model_version = ModelVersion.objects.filter(name=options["name"]).first()
            if model_version is None:
                raise CommandError(f"no model version is named {options['name']!r}")
        else:
            model_version = ModelVersion.objects.filter(is_active=True).first()
            if model_version is None:
                raise CommandError("no model version is active; name the version to export")
        out_path = options["out"] or pathlib.Path(f"{model_version.name}.tar.gz")
        try:
            written = model_version_export(model_version=model_version, out_path=out_path)
        except ModelArchiveError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(
            f"model version {model_version.name} exported to {written} ({written.stat().st_size:,} bytes)"
        )
