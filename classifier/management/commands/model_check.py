"""python manage.py model_check [NAME] [--load]: is the model file the one that was registered?"""

from django.core.management.base import BaseCommand, CommandError, CommandParser

from classifier.artifacts import ArtifactFetchError, model_version_artifact_dir, model_version_fetch
from classifier.ml.formats import MODEL_FILE
from classifier.models import ModelVersion
from classifier.selectors import model_version_active
from classifier.services.model_versions import model_version_problem


class Command(BaseCommand):
    help = (
        "Check that the active model version's model.keras (or another version's) is the file registered: "
        "its sha256 against the database and metadata.json. --load also loads it with Keras. "
        "Exits 1 naming the problem."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", nargs="?", help="a version's name (default: the active version)")
        parser.add_argument(
            "--load", action="store_true", help="also load the model with Keras and run it once (slower)"
        )

    def handle(self, *args: object, **options: object) -> None:
        if options["name"]:
            model_version = ModelVersion.objects.filter(name=options["name"]).first()
            if model_version is None:
                raise CommandError(f"no model version is named {options['name']!r}")
        else:
            model_version = model_version_active()
            if model_version is None:
                raise CommandError("no model version is active")
        try:
            model_version_fetch(model_version=model_version)
        except ArtifactFetchError as error:
            raise CommandError(str(error)) from None
        problem = model_version_problem(model_version=model_version)
        if problem is not None:
            raise CommandError(problem)
        if options["load"]:
            self._load(model_version)
        model_path = model_version_artifact_dir(model_version=model_version) / MODEL_FILE
        self.stdout.write(
            f"model version {model_version.name}: {model_path} is intact "
            f"(sha256 {model_version.model_sha256}, {model_path.stat().st_size:,} bytes)"
            + (", loads and runs" if options["load"] else "")
        )

    def _load(self, model_version: ModelVersion) -> None:
        # TensorFlow only when asked to load: the file check alone stays quick and quiet.
        from classifier.workers import runtime

        try:
            runtime.serving_device()
            runtime.model_version_load(model_version=model_version)
        except runtime.ServedModelError as error:
            raise CommandError(str(error)) from None
