"""Training a queued run in the worker: data, Keras, progress, heartbeat and cancel (loads TensorFlow).

The run's rows are written through classifier.services.training; this module only does the work between.
"""

import logging
import pathlib
import time
from functools import partial

from django.conf import settings
from django.utils import timezone

from classifier.artifacts import ArtifactFetchError, model_version_fetch
from classifier.ml.datasets import load_labelled_files
from classifier.ml.formats import read_metadata
from classifier.ml.train import TrainingCancelled, TrainResult, train, train_quick
from classifier.models import ModelVersion, TrainingRun
from classifier.services.training import (
    TrainingRunError,
    training_features_dir,
    training_run_artifact_dir,
    training_run_claim,
    training_run_finish,
    training_run_skip_if_unchanged,
    training_run_succeed,
    training_set_collect,
)
from classifier.workers.periodic import Every

logger = logging.getLogger(__name__)

# Checking for a cancel and writing progress: at most this often, so a run costs the database little.
PROGRESS_INTERVAL_S = 1.0


def _heartbeat(run_id: int) -> None:
    TrainingRun.objects.filter(pk=run_id, status=TrainingRun.Status.RUNNING).update(
        heartbeat_at=timezone.now()
    )


class _RunReporter:
    """Writes training progress to the run and reads whether a person cancelled it, at most once a second."""

    def __init__(self, *, run_id: int) -> None:
        self._run_id = run_id
        self._written_at = self._checked_at = float("-inf")
        self._pending: dict | None = None
        self.latest: dict = {}
        self._cancelled = False

    def progress(self, event: dict) -> None:
        self.latest = self._pending = {"stage": "training", **event}
        if time.monotonic() - self._written_at >= PROGRESS_INTERVAL_S:
            self._write()

    def should_stop(self) -> bool:
        now = time.monotonic()
        if now - self._checked_at >= PROGRESS_INTERVAL_S:
            self._checked_at = now
            self._cancelled = TrainingRun.objects.filter(pk=self._run_id, cancel_requested=True).exists()
            if self._pending is not None and now - self._written_at >= PROGRESS_INTERVAL_S:
                self._write()
        return self._cancelled

    def _write(self) -> None:
        TrainingRun.objects.filter(pk=self._run_id).update(
            progress=self._pending, heartbeat_at=timezone.now()
        )
        self._written_at = time.monotonic()
        self._pending = None


def _base_artifact_dir(run: TrainingRun) -> pathlib.Path:
    """The artifact of the version a quick run starts from, on this machine."""
    base = ModelVersion.objects.filter(pk=run.params.get("base_version")).first()
    if base is None:
        raise TrainingRunError(
            f"the model version this quick retrain starts from (id {run.params.get('base_version')}) "
            "was deleted; start a new quick or full retrain"
        )
    try:
        return model_version_fetch(model_version=base)
    except ArtifactFetchError as error:
        raise TrainingRunError(str(error)) from None


def _train(run: TrainingRun, reporter: _RunReporter) -> TrainingRun:
    training_set = training_set_collect(base_dataset=run.params.get("base_dataset") or "")
    skipped = training_run_skip_if_unchanged(run=run, training_set=training_set)
    if skipped is not None:
        return skipped
    quick = run.params.get("kind") == "quick"
    base_dir = _base_artifact_dir(run) if quick else None
    # A quick run keeps the photo size of the model it starts from.
    height, width = (
        read_metadata(base_dir)["input_shape"][:2] if quick else [int(run.params["image_size"])] * 2
    )
    warnings: list[str] = []
    dataset = load_labelled_files(
        training_set.files,
        image_size=(height, width),
        seed=0,
        warn=warnings.append,
        name=f"catalog (run {run.pk})",
    )
    name, out_dir = training_run_artifact_dir(run=run)
    common = {
        "dataset": dataset,
        "epochs": int(run.params["epochs"]),
        "out_dir": out_dir,
        "progress": reporter.progress,
        "should_stop": reporter.should_stop,
        "features_dir": training_features_dir(),
    }
    result: TrainResult
    if quick:
        result = train_quick(base_dir=base_dir, **common)
    else:
        result = train(
            arch=run.params["architecture"], mixed_precision=settings.VITRINE_MIXED_PRECISION, **common
        )
    return training_run_succeed(
        run=run,
        name=name,
        artifact_dir=result.artifact_dir,
        metrics=result.metrics,
        training_set=training_set,
        skipped=len(warnings),
        progress=reporter.latest,
    )


def training_run_execute(*, run_id: int, worker: str = "") -> TrainingRun | None:
    """Worker side: trains a queued run on the catalog's reviewed photos and registers an inactive version.

    Skipped when the photos, labels and settings equal the last successful run's; a failure records its
    reason and a cancel stops it, both leaving no version behind. The active version is never changed here.
    Returns None when there was nothing to do (the run is gone or no longer queued).
    """
    run = training_run_claim(run_id=run_id, worker=worker)
    if run is None:
        return None
    reporter = _RunReporter(run_id=run_id)
    try:
        # A run silent for long is swept as failed: while it trains, it says it is alive now and then.
        with Every(
            settings.VITRINE_TRAINING_HEARTBEAT_S,
            partial(_heartbeat, run_id),
            name=f"training run {run_id} heartbeat",
        ):
            return _train(run, reporter)
    except TrainingCancelled:
        epoch = reporter.latest.get("epoch", 0)
        return training_run_finish(
            run_id=run_id,
            status=TrainingRun.Status.CANCELLED,
            progress=reporter.latest or run.progress,
            message=(
                f"Cancelled by a person at epoch {epoch}/{run.params.get('epochs')}; "
                "no model version was made."
            ),
        )
    except Exception as error:
        # Every failure ends the run with its reason on the page; the log keeps the traceback.
        logger.exception("training run %s failed", run_id)
        reason = " ".join(str(error).split()) or type(error).__name__
        if not isinstance(error, ValueError):
            reason = f"{type(error).__name__}: {reason}"
        return training_run_finish(
            run_id=run_id,
            status=TrainingRun.Status.FAILED,
            progress=reporter.latest or run.progress,
            error=f"{reason}. The active model version was not changed.",
        )
