"""python manage.py train --dataset NAME_OR_DIR --arch ARCH --epochs N --out DIR
python manage.py train --from-catalog [--arch A] [--epochs N] [--image-size S] [--base-dataset NAME]
                       [--queue]
python manage.py train --quick [--epochs N] [--queue]   (only the active version's last layer learns)"""

import os
import pathlib
import socket
import time
from collections.abc import Callable

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.urls import reverse

from classifier.ml.architectures import ARCHITECTURES, DEFAULT_ARCH, ArchitectureError, recipe_for
from classifier.ml.artifact import ArtifactError
from classifier.ml.datasets import DatasetError, load_dataset
from classifier.ml.serving import configure_tensorflow
from classifier.ml.train import TrainingError, format_progress, train
from classifier.models import TrainingRun
from classifier.services.training import (
    TrainingRunError,
    training_recipe_default,
    training_run_create,
    training_run_create_quick,
)
from classifier.workers.periodic import Every
from classifier.workers.training import training_run_execute

DATASET_DEFAULT_IMAGE_SIZE = 96
# How often the command reads a run's progress; the run itself writes it at most once a second.
PROGRESS_POLL_S = 0.5
# --dataset options that mean nothing for a run on the catalog (the run names its own model folder).
DATASET_ONLY_OPTIONS = ("out", "batch_size", "subset")


class Command(BaseCommand):
    help = (
        "Train a classifier on a built-in data set or an image folder and write its artifact directory, "
        "or (--from-catalog) on the catalog's reviewed products into a new inactive model version."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dataset", help="fashion-mnist, mnist, cifar10, cifar100 or a folder")
        parser.add_argument(
            "--from-catalog",
            action="store_true",
            help="train on the reviewed products as a training run; makes an inactive model version",
        )
        parser.add_argument(
            "--quick",
            action="store_true",
            help="quick retrain on the reviewed products: only the active version's last layer learns again "
            "(seconds to a minute); makes an inactive model version",
        )
        parser.add_argument(
            "--arch",
            default=None,
            help=f"one of: {', '.join(ARCHITECTURES)} (default: {DEFAULT_ARCH}; the retrain recipe's "
            "with --from-catalog)",
        )
        parser.add_argument("--epochs", type=int, default=None, help="default: the architecture's recipe")
        parser.add_argument("--out", type=pathlib.Path, help="new artifact directory (with --dataset)")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--batch-size", type=int, default=None, help="default: the architecture's recipe")
        parser.add_argument(
            "--image-size",
            type=int,
            default=None,
            help=f"side in pixels for photos (default: {DATASET_DEFAULT_IMAGE_SIZE}; the retrain recipe's "
            "with --from-catalog)",
        )
        parser.add_argument("--val-fraction", type=float, default=0.1)
        parser.add_argument(
            "--subset",
            type=int,
            default=None,
            help="train on N images per split (stratified), for smoke runs",
        )
        parser.add_argument(
            "--base-dataset",
            default=None,
            help="with --from-catalog: also train on this photo folder of VITRINE_DATASETS_DIR",
        )
        parser.add_argument(
            "--queue",
            action="store_true",
            help="with --from-catalog: send the run to the training queue instead of training here",
        )

    def handle(self, *args: object, **options: object) -> None:
        if options["from_catalog"] and options["dataset"]:
            raise CommandError("--from-catalog and --dataset exclude each other: train on one or the other")
        if options["quick"] and options["dataset"]:
            raise CommandError("--quick retrains the active version on the catalog; it excludes --dataset")
        if options["from_catalog"] or options["quick"]:
            self._train_from_catalog(options)
            return
        if not options["dataset"]:
            raise CommandError("name what to train on: --dataset NAME_OR_FOLDER or --from-catalog")
        for option in ("base_dataset", "queue"):
            if options[option]:
                raise CommandError(f"--{option.replace('_', '-')} applies to --from-catalog only")
        if options["out"] is None:
            raise CommandError("--out is required with --dataset: the new artifact directory")
        options["arch"] = options["arch"] or DEFAULT_ARCH
        if options["arch"] not in ARCHITECTURES:
            raise CommandError(
                f"unknown architecture {options['arch']!r}; choose one of: {', '.join(ARCHITECTURES)}"
            )
        if options["image_size"] is None:
            # A pretrained backbone is loaded at the size it was trained at; other photo models at 96 px.
            options["image_size"] = recipe_for(options["arch"]).image_side or DATASET_DEFAULT_IMAGE_SIZE
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
                offline=settings.VITRINE_OFFLINE,
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
                mixed_precision=settings.VITRINE_MIXED_PRECISION,
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

    def _train_from_catalog(self, options: dict) -> None:
        for option in DATASET_ONLY_OPTIONS:
            if options[option] is not None:
                raise CommandError(f"--{option.replace('_', '-')} applies to --dataset only")
        recipe = training_recipe_default()
        try:
            if options["quick"]:
                for option in ("arch", "image_size", "base_dataset"):
                    if options[option] is not None:
                        raise CommandError(
                            f"--{option.replace('_', '-')} does not apply to --quick: a quick retrain keeps "
                            "the active version's architecture and photo size, and the recipe's base data set"
                        )
                run = training_run_create_quick(epochs=options["epochs"])
            else:
                run = training_run_create(
                    architecture=options["arch"] or recipe["architecture"],
                    epochs=options["epochs"] if options["epochs"] is not None else recipe["epochs"],
                    image_size=recipe["image_size"]
                    if options["image_size"] is None
                    else options["image_size"],
                    base_dataset=recipe["base_dataset"]
                    if options["base_dataset"] is None
                    else options["base_dataset"],
                )
        except TrainingRunError as error:
            raise CommandError(str(error)) from None
        recipe_words = ", ".join(f"{key} {value}" for key, value in run.params.items() if value != "")
        admin_url = reverse("admin:classifier_trainingrun_change", args=[run.pk])
        if options["queue"]:
            self.stdout.write(f"training run {run.pk} queued ({recipe_words}); watch it at {admin_url}")
            return
        self.stdout.write(f"training run {run.pk} ({recipe_words}), training here")
        self.stdout.write(configure_tensorflow())
        printer = _ProgressPrinter(run_id=run.pk, write=self.stdout.write)
        with Every(PROGRESS_POLL_S, printer.print_new, name=f"training run {run.pk} progress"):
            # The run was also sent to the training queue; whichever process claims it first trains it.
            worker = f"manage.py train@{socket.gethostname()} pid {os.getpid()}"
            if training_run_execute(run_id=run.pk, worker=worker) is None:
                self.stdout.write(f"a training worker took run {run.pk} first; following it ({admin_url})")
                _wait_until_ended(run_id=run.pk)
        # The last epoch may end between two polls; the finished run keeps it.
        printer.print_new()
        self._report(TrainingRun.objects.select_related("model_version").get(pk=run.pk))

    def _report(self, run: TrainingRun) -> None:
        if run.status == TrainingRun.Status.SUCCEEDED:
            model_version = run.model_version
            accuracy = model_version.metrics.get("test_accuracy")
            self.stdout.write(f"model version {model_version.name} (not active yet)")
            if accuracy is not None:
                self.stdout.write(f"test accuracy {accuracy:.4f}")
            if model_version.metrics.get("suggested_threshold") is not None:
                self.stdout.write(f"suggested threshold {model_version.threshold:.2f}")
            self.stdout.write(run.message)
        elif run.status == TrainingRun.Status.SKIPPED:
            self.stdout.write(run.message)
        else:
            raise CommandError(f"training run {run.pk} {run.status}: {run.error or run.message}")


def _wait_until_ended(*, run_id: int) -> None:
    while TrainingRun.objects.filter(
        pk=run_id, status__in=(TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING)
    ).exists():
        time.sleep(PROGRESS_POLL_S)


class _ProgressPrinter:
    """Prints each new epoch the run reports while it trains in this process's main thread."""

    def __init__(self, *, run_id: int, write: Callable[[str], object]) -> None:
        self._run_id = run_id
        self._write = write
        self._printed: tuple | None = None

    def print_new(self) -> None:
        progress = TrainingRun.objects.filter(pk=self._run_id).values_list("progress", flat=True).first()
        if not progress or "loss" not in progress and progress.get("stage") != "features":
            return
        key = (progress.get("stage"), progress.get("epoch"), progress.get("photos"))
        if key != self._printed:
            self._printed = key
            # "training" is the run's own stage name for every epoch: it says nothing on a line of its own.
            if progress.get("stage") == "training":
                progress = {name: value for name, value in progress.items() if name != "stage"}
            self._write(format_progress(progress))
