"""python manage.py bootstrap_model: a fresh install gets a working model and its categories by itself."""

import datetime
import pathlib
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from classifier.selectors import model_version_active
from classifier.services.model_versions import ModelVersionError, model_version_register

# seed_lenet on all of Fashion-MNIST, 3 epochs: 91% test accuracy in 92 s on 2 shared CPU cores (measured).
DEFAULT_DATASET = "fashion-mnist"
DEFAULT_ARCH = "seed_lenet"
DEFAULT_EPOCHS = 3


class Command(BaseCommand):
    help = (
        "When no model version is active, train a default model (seed_lenet, Fashion-MNIST, 3 epochs: "
        "about 1.5 minutes on 2 CPU cores), register and activate it, creating its categories. "
        "Does nothing otherwise."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dataset", default=DEFAULT_DATASET, help="a built-in data set or an image folder"
        )
        parser.add_argument("--arch", default=DEFAULT_ARCH)
        parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
        parser.add_argument(
            "--subset", type=int, default=None, help="train on N images per split only (a quick smoke run)"
        )

    def handle(self, *args: object, **options: object) -> None:
        active = model_version_active()
        if active is not None:
            self.stdout.write(f"Model version {active.name} is active; nothing to do.")
            return
        from classifier.ml.architectures import ArchitectureError
        from classifier.ml.artifact import ArtifactError
        from classifier.ml.datasets import DatasetError, load_dataset
        from classifier.ml.serving import configure_tensorflow
        from classifier.ml.train import TrainingError, format_progress, train

        started = time.monotonic()
        is_default = (options["dataset"], options["arch"], options["epochs"], options["subset"]) == (
            DEFAULT_DATASET,
            DEFAULT_ARCH,
            DEFAULT_EPOCHS,
            None,
        )
        self.stdout.write(
            f"No active model version: training {options['arch']} on {options['dataset']} for "
            f"{options['epochs']} epochs on {configure_tensorflow()}"
            + ("; this takes about 1.5 minutes on 2 CPU cores." if is_default else ".")
        )
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
        out_dir = (
            pathlib.Path(settings.VITRINE_MODELS_DIR) / f"{options['arch']}-{options['dataset']}-{stamp}"
        )
        try:
            dataset = load_dataset(
                options["dataset"],
                datasets_dir=pathlib.Path(settings.VITRINE_DATASETS_DIR),
                offline=settings.VITRINE_OFFLINE,
                warn=lambda message: self.stderr.write(f"warning: {message}"),
            )
            if options["subset"]:
                dataset = dataset.subset(per_split=options["subset"])
            result = train(
                mixed_precision=settings.VITRINE_MIXED_PRECISION,
                dataset=dataset,
                arch=options["arch"],
                epochs=options["epochs"],
                out_dir=out_dir,
                progress=lambda event: self.stdout.write(format_progress(event)),
            )
            model_version = model_version_register(artifact_dir=result.artifact_dir, activate=True)
        except (DatasetError, TrainingError, ArchitectureError, ArtifactError, ModelVersionError) as error:
            raise CommandError(str(error)) from None
        self.stdout.write(
            f"Model version {model_version.name} is active: test accuracy "
            f"{result.metrics['test_accuracy']:.3f}, {len(model_version.class_names)} categories "
            f"({', '.join(model_version.class_names)}). Took {time.monotonic() - started:.0f} s."
        )
