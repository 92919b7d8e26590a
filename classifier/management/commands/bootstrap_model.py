"""python manage.py bootstrap_model: a fresh install gets a working model and its categories by itself.

First choice, the starter real-photo model: the pretrained EfficientNet-Lite2 backbone (from its PyPI wheel)
with the head kept in the repository (classifier/ml/starter), trained on the CC0 clothing-small photos;
assembling it takes seconds and no data set. Without the backbone package (or with the starter files
damaged) it says so in one line and falls back to a small Fashion-MNIST model that was never validated on
product photos: that version never files a product by itself, every prediction waits for a person.
"""

import datetime
import pathlib
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from classifier.ml.architectures import ArchitectureError
from classifier.ml.datasets import DatasetError, load_dataset
from classifier.ml.formats import ArtifactError, format_duration, read_metadata
from classifier.ml.machine import cpu_flags_line
from classifier.ml.serving import configure_tensorflow
from classifier.ml.starter import StarterUnavailable
from classifier.ml.starter.assemble import assemble_starter_artifact
from classifier.ml.train import TrainingError, format_progress, train
from classifier.models import ModelVersion
from classifier.selectors import model_version_active
from classifier.services.model_versions import (
    ModelVersionError,
    model_version_activate,
    model_version_register,
)

# The fallback when the starter cannot be assembled: seed_lenet on all of Fashion-MNIST, 3 epochs.
FALLBACK_DATASET = "fashion-mnist"
FALLBACK_ARCH = "seed_lenet"
FALLBACK_EPOCHS = 3


class Command(BaseCommand):
    help = (
        "When no model version is active, assemble the starter real-photo model (seconds, no data set) and "
        "activate it, creating its categories; without the backbone package, fall back to a Fashion-MNIST "
        "model that never files products by itself. Does nothing when a version is active."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--starter-dir",
            type=pathlib.Path,
            default=None,
            help="the starter head's folder (default: the one in classifier/ml/starter)",
        )
        parser.add_argument("--fallback-dataset", default=FALLBACK_DATASET)
        parser.add_argument("--fallback-arch", default=FALLBACK_ARCH)
        parser.add_argument("--fallback-epochs", type=int, default=FALLBACK_EPOCHS)
        parser.add_argument(
            "--fallback-subset", type=int, default=None, help="train the fallback on N images per split only"
        )

    def handle(self, *args: object, **options: object) -> None:
        active = model_version_active()
        if active is not None:
            self.stdout.write(f"Model version {active.name} is active; nothing to do.")
            return
        started = time.monotonic()
        device = configure_tensorflow()
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
        try:
            model_version = self._starter(starter_dir=options["starter_dir"], stamp=stamp)
        except StarterUnavailable as why:
            self.stdout.write(
                f"Starter model unavailable ({why}); falling back to {options['fallback_arch']} on "
                f"{options['fallback_dataset']}, never validated on product photos: every product will wait "
                "for review."
            )
            model_version = self._fallback(options=options, stamp=stamp)
        took = time.monotonic() - started
        self.stdout.write(
            f"Model version {model_version.name} is active: {self._figures(model_version)}. "
            f"Ready in {format_duration(took)} on {device}; {cpu_flags_line()}."
        )

    def _starter(self, *, starter_dir: pathlib.Path | None, stamp: str) -> ModelVersion:
        self.stdout.write(
            "No active model version: assembling the starter real-photo model (EfficientNet-Lite2)."
        )
        out_dir = pathlib.Path(settings.VITRINE_MODELS_DIR) / f"starter-effnet-lite2-{stamp}"
        artifact_dir = assemble_starter_artifact(out_dir=out_dir, starter_dir=starter_dir)
        try:
            return self._register(artifact_dir, files_automatically=True)
        except (ArtifactError, ModelVersionError) as error:
            raise CommandError(str(error)) from None

    def _fallback(self, *, options: dict, stamp: str) -> ModelVersion:
        out_dir = pathlib.Path(settings.VITRINE_MODELS_DIR) / (
            f"{options['fallback_arch']}-{options['fallback_dataset']}-{stamp}"
        )
        try:
            dataset = load_dataset(
                options["fallback_dataset"],
                datasets_dir=pathlib.Path(settings.VITRINE_DATASETS_DIR),
                offline=settings.VITRINE_OFFLINE,
                warn=lambda message: self.stderr.write(f"warning: {message}"),
            )
            if options["fallback_subset"]:
                dataset = dataset.subset(per_split=options["fallback_subset"])
            result = train(
                dataset=dataset,
                arch=options["fallback_arch"],
                epochs=options["fallback_epochs"],
                out_dir=out_dir,
                progress=lambda event: self.stdout.write(format_progress(event)),
                mixed_precision=settings.VITRINE_MIXED_PRECISION,
            )
            return self._register(result.artifact_dir, files_automatically=False)
        except (DatasetError, TrainingError, ArchitectureError, ArtifactError, ModelVersionError) as error:
            raise CommandError(str(error)) from None

    @transaction.atomic
    def _register(self, artifact_dir: pathlib.Path, *, files_automatically: bool) -> ModelVersion:
        model_version = model_version_register(artifact_dir=artifact_dir)
        suggested = (read_metadata(artifact_dir).get("metrics") or {}).get("suggested_threshold")
        if suggested is not None:
            model_version.threshold = float(suggested)
        model_version.files_automatically = files_automatically
        model_version.save(update_fields=["threshold", "files_automatically"])
        return model_version_activate(model_version=model_version)

    def _figures(self, model_version: ModelVersion) -> str:
        metrics = model_version.metrics or {}
        categories = f"{len(model_version.class_names)} categories ({', '.join(model_version.class_names)})"
        if not model_version.files_automatically:
            return f"{categories}; test accuracy {metrics.get('test_accuracy', 0):.1%} on Fashion-MNIST"
        accuracy = metrics.get("test_accuracy")
        scored = (
            f"{accuracy:.1%} top-1 on clothing-small/validation" if accuracy is not None else "not scored"
        )
        return f"{categories}; {scored}, files automatically at confidence {model_version.threshold:.2f}"
