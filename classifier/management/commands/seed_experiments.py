"""python manage.py seed_experiments [--epochs 10] [--out DIR] [--lenet]: the course's Fashion-MNIST table."""

import datetime
import pathlib

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from classifier.ml.artifact import read_metadata
from classifier.ml.datasets import DatasetError, load_dataset
from classifier.ml.formats import format_duration
from classifier.ml.serving import configure_tensorflow
from classifier.ml.train import TrainingError, format_progress, train

SEED_VARIANTS = ("seed_dense", "seed_dense_plus128", "seed_dense_plus128_64")


def format_table(rows: list[dict]) -> str:
    header = f"{'variant':<24}{'params':>10}{'epochs':>8}{'seconds':>9}{'test accuracy':>15}"
    lines = [header, "-" * len(header)]
    lines += [
        f"{row['variant']:<24}{row['params']:>10,}{row['epochs']:>8}{row['seconds']:>9.1f}{row['test_accuracy']:>15.4f}"
        for row in rows
    ]
    return "\n".join(lines)


class Command(BaseCommand):
    help = "Train the seed dense network and its two ablations (and LeNet) on Fashion-MNIST; print the table."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--epochs", type=int, default=10)
        parser.add_argument(
            "--out",
            type=pathlib.Path,
            default=None,
            help="default: VITRINE_MODELS_DIR/seed-experiments/<time>",
        )
        parser.add_argument("--lenet", action="store_true", help="also train seed_lenet")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument(
            "--subset",
            type=int,
            default=None,
            help="train on N images per split (stratified), for smoke runs",
        )

    def handle(self, *args: object, **options: object) -> None:
        if options["epochs"] < 1:
            raise CommandError(f"--epochs must be at least 1, not {options['epochs']}")
        if options["subset"] is not None and options["subset"] < 1:
            raise CommandError(f"--subset must be at least 1, not {options['subset']}")
        out_root: pathlib.Path = options["out"] or (
            pathlib.Path(settings.VITRINE_MODELS_DIR)
            / "seed-experiments"
            / datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
        )
        variants = [*SEED_VARIANTS, "seed_lenet"] if options["lenet"] else list(SEED_VARIANTS)
        occupied = [variant for variant in variants if (out_root / variant).exists()]
        if occupied:
            raise CommandError(f"{out_root}: already holds {', '.join(occupied)}; choose another --out")
        self.stdout.write(configure_tensorflow())
        try:
            dataset = load_dataset(
                "fashion-mnist",
                datasets_dir=pathlib.Path(settings.VITRINE_DATASETS_DIR),
                offline=settings.VITRINE_OFFLINE,
                seed=options["seed"],
            )
            if options["subset"]:
                dataset = dataset.subset(per_split=options["subset"], seed=options["seed"])
            rows = []
            for variant in variants:
                self.stdout.write(f"== {variant}")
                result = train(
                    mixed_precision=settings.VITRINE_MIXED_PRECISION,
                    dataset=dataset,
                    arch=variant,
                    epochs=options["epochs"],
                    out_dir=out_root / variant,
                    seed=options["seed"],
                    progress=lambda event: self.stdout.write(format_progress(event)),
                )
                self.stdout.write(
                    f"{variant}: test accuracy {result.metrics['test_accuracy']:.4f} "
                    f"in {format_duration(result.seconds)}"
                )
                rows.append(
                    {
                        "variant": variant,
                        "params": read_metadata(result.artifact_dir)["params"],
                        "epochs": options["epochs"],
                        "seconds": result.seconds,
                        "test_accuracy": result.metrics["test_accuracy"],
                    }
                )
        except (DatasetError, TrainingError) as error:
            raise CommandError(str(error)) from None
        self.stdout.write("")
        self.stdout.write(format_table(rows))
        self.stdout.write(f"artifacts: {out_root}")
