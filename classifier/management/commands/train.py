"""python manage.py train --dataset NAME_OR_DIR --arch ARCH --epochs N --out DIR"""

import pathlib

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from classifier.ml.architectures import ARCHITECTURES, DEFAULT_ARCH, ArchitectureError
from classifier.ml.artifact import ArtifactError
from classifier.ml.datasets import DatasetError, load_dataset
from classifier.ml.serving import configure_tensorflow
from classifier.ml.train import TrainingError, format_progress, train


class Command(BaseCommand):
    help = "Train a classifier on a built-in data set or an image folder and write its artifact directory."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dataset", required=True, help="fashion-mnist, mnist, cifar10, cifar100 or a folder"
        )
        parser.add_argument("--arch", default=DEFAULT_ARCH, help=f"one of: {', '.join(ARCHITECTURES)}")
        parser.add_argument("--epochs", type=int, default=None, help="default: the architecture's recipe")
        parser.add_argument("--out", required=True, type=pathlib.Path, help="new artifact directory")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--batch-size", type=int, default=None, help="default: the architecture's recipe")
        parser.add_argument("--image-size", type=int, default=96, help="side in pixels for image folders")
        parser.add_argument("--val-fraction", type=float, default=0.1)
        parser.add_argument(
            "--subset",
            type=int,
            default=None,
            help="train on N images per split (stratified), for smoke runs",
        )

    def handle(self, *args: object, **options: object) -> None:
        if options["arch"] not in ARCHITECTURES:
            raise CommandError(
                f"unknown architecture {options['arch']!r}; choose one of: {', '.join(ARCHITECTURES)}"
            )
        if options["image_size"] < 8:
            raise CommandError(f"--image-size must be at least 8, not {options['image_size']}")
        if not 0.0 <= options["val_fraction"] < 1.0:
            raise CommandError(f"--val-fraction must be in [0, 1), not {options['val_fraction']}")
        if options["subset"] is not None and options["subset"] < 1:
            raise CommandError(f"--subset must be at least 1, not {options['subset']}")
        self.stdout.write(configure_tensorflow())
        try:
            dataset = load_dataset(
                options["dataset"],
                datasets_dir=pathlib.Path(settings.VITRINE_DATASETS_DIR),
                image_size=(options["image_size"], options["image_size"]),
                seed=options["seed"],
                val_fraction=options["val_fraction"],
                warn=lambda message: self.stderr.write(f"warning: {message}"),
            )
            if options["subset"]:
                dataset = dataset.subset(per_split=options["subset"], seed=options["seed"])
            self.stdout.write(
                f"{dataset.name}: {dataset.num_classes} categories, {len(dataset.x_train)} train / "
                f"{len(dataset.x_val)} validation / {len(dataset.x_test)} test images "
                f"of {dataset.input_shape}"
            )
            result = train(
                dataset=dataset,
                arch=options["arch"],
                epochs=options["epochs"],
                out_dir=options["out"],
                seed=options["seed"],
                batch_size=options["batch_size"],
                progress=lambda event: self.stdout.write(format_progress(event)),
            )
        except (DatasetError, TrainingError, ArchitectureError, ArtifactError) as error:
            raise CommandError(str(error)) from None
        self.stdout.write(
            f"test accuracy {result.metrics['test_accuracy']:.4f} "
            f"({result.metrics['test_images']} images, {result.seconds:.0f}s)"
        )
        self.stdout.write(f"artifact: {result.artifact_dir}")
