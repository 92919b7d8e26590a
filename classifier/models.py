from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext, pgettext_lazy
from django.utils.translation import gettext_lazy as _

from classifier.validators import validate_threshold


class ModelVersion(models.Model):
    """One trained classifier artifact on disk, with what it was trained on and how well it did."""

    name = models.CharField(_("name"), max_length=100, unique=True)
    # Directory with model.keras + metadata.json (classifier.ml.artifact); relative to VITRINE_MODELS_DIR.
    artifact_path = models.CharField(_("artifact path"), max_length=500)
    # With VITRINE_STORAGE=s3: the key prefix of its files under the bucket's models/ (model.keras's sha256);
    # every host fetches them from there (classifier.artifacts). Blank: on the registering host's disk only.
    artifact_key = models.CharField(_("artifact key"), max_length=100, blank=True)
    model_sha256 = models.CharField(_("model sha256"), max_length=64)
    architecture = models.CharField(_("architecture"), max_length=64)
    class_names = models.JSONField(_("class names"), default=list)
    metrics = models.JSONField(_("metrics"), default=dict, blank=True)
    data_fingerprint = models.CharField(_("data fingerprint"), max_length=64, blank=True)
    # Predictions at or above this confidence file the product automatically.
    threshold = models.FloatField(_("threshold"), null=True, blank=True, validators=[validate_threshold])
    # Each category its own threshold where the version's held-out photos could pick one (metrics
    # "class_thresholds"); the others, and every category when off, use `threshold`.
    per_class_thresholds = models.BooleanField(
        _("per-category thresholds"),
        default=True,
        help_text=_("File each category at the threshold picked for it on held-out photos, where one was."),
    )
    # Off for a model never validated on product photos (a fallback): every prediction waits for a person.
    files_automatically = models.BooleanField(_("files automatically"), default=True)
    is_active = models.BooleanField(pgettext_lazy("model version", "active"), default=False)
    activated_at = models.DateTimeField(_("activated at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("model version")
        verbose_name_plural = _("model versions")
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_active"], condition=Q(is_active=True), name="one_active_model"
            )
        ]

    def __str__(self) -> str:
        return self.name


class TrainingRun(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", _("Queued")
        RUNNING = "running", _("Running")
        SUCCEEDED = "succeeded", _("Succeeded")
        FAILED = "failed", _("Failed")
        CANCELLED = "cancelled", _("Cancelled")
        SKIPPED = "skipped", _("Skipped")

    status = models.CharField(
        _("status"), max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True
    )
    params = models.JSONField(_("params"), default=dict, blank=True)
    # Latest progress event from classifier.ml.train (epoch, epochs, loss, accuracy, eta_s...).
    progress = models.JSONField(_("progress"), default=dict, blank=True)
    data_fingerprint = models.CharField(_("data fingerprint"), max_length=64, blank=True)
    error = models.TextField(_("error"), blank=True)
    # What came of the run, in words: what it trained on, why it was skipped or cancelled.
    message = models.TextField(_("message"), blank=True)
    cancel_requested = models.BooleanField(_("cancel requested"), default=False)
    # The worker that claimed the run, and when it last said it is alive: a silent run is swept as failed.
    worker = models.CharField(_("worker"), max_length=255, blank=True)
    heartbeat_at = models.DateTimeField(_("heartbeat at"), null=True, blank=True)
    model_version = models.OneToOneField(
        ModelVersion,
        verbose_name=_("model version"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="training_run",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("created by"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    started_at = models.DateTimeField(_("started at"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)

    class Meta:
        verbose_name = _("training run")
        verbose_name_plural = _("training runs")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return gettext("Training run %(number)s (%(status)s)") % {
            "number": self.pk,
            "status": self.get_status_display().lower(),
        }


class ModelActivation(models.Model):
    """One switch of the active model version; the history a roll back walks."""

    model_version = models.ForeignKey(
        ModelVersion, verbose_name=_("model version"), on_delete=models.CASCADE, related_name="activations"
    )
    # The version that was active until this switch (None: none was).
    previous = models.ForeignKey(
        ModelVersion,
        verbose_name=_("previous"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    is_roll_back = models.BooleanField(_("is roll back"), default=False)
    activated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("activated by"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    activated_at = models.DateTimeField(_("activated at"), auto_now_add=True)

    class Meta:
        verbose_name = _("model activation")
        verbose_name_plural = _("model activations")
        ordering = ["-activated_at", "-pk"]

    def __str__(self) -> str:
        return gettext("%(version)s activated %(when)s") % {
            "version": self.model_version,
            "when": f"{self.activated_at:%Y-%m-%d %H:%M}",
        }


class BulkJob(models.Model):
    """Re-classifying many products with the active model in the background, chunk by chunk."""

    class Status(models.TextChoices):
        QUEUED = "queued", _("Queued")
        RUNNING = "running", _("Running")
        SUCCEEDED = "succeeded", _("Succeeded")
        FAILED = "failed", _("Failed")
        CANCELLED = "cancelled", _("Cancelled")

    status = models.CharField(
        _("status"), max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True
    )
    # The chosen products (ascending ids), or None for every product up to last_product_id.
    product_ids = models.JSONField(_("product ids"), null=True, blank=True)
    last_product_id = models.BigIntegerField(_("last product id"), default=0)
    chunk_size = models.PositiveIntegerField(_("chunk size"), default=64)
    # Id of the last product handled: a restarted job goes on after it.
    cursor = models.BigIntegerField(_("cursor"), default=0)
    total = models.PositiveIntegerField(_("total"), default=0)
    done = models.PositiveIntegerField(_("done"), default=0)
    failed = models.PositiveIntegerField(_("failed"), default=0)
    error = models.TextField(_("error"), blank=True)
    # Deliveries of the chunk after the cursor that started and never ended: each is a worker that died on it.
    chunk_attempts = models.PositiveSmallIntegerField(_("chunk attempts"), default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("created by"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    started_at = models.DateTimeField(_("started at"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)
    heartbeat_at = models.DateTimeField(_("heartbeat at"), null=True, blank=True)

    class Meta:
        verbose_name = _("bulk re-classification")
        verbose_name_plural = _("bulk re-classifications")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return gettext("Re-classification %(number)s (%(status)s)") % {
            "number": self.pk,
            "status": self.get_status_display().lower(),
        }


class Prediction(models.Model):
    """What a model version said about one photo of a product: the classifier's record, kept as history.

    The product's filing (category, status) is the catalog's, decided from the latest prediction.
    """

    product = models.ForeignKey(
        "catalog.Product", verbose_name=_("product"), on_delete=models.CASCADE, related_name="predictions"
    )
    model_version = models.ForeignKey(
        ModelVersion, verbose_name=_("model version"), on_delete=models.CASCADE, related_name="predictions"
    )
    # The photo (by content) the prediction was made for.
    image_sha256 = models.CharField(_("image sha256"), max_length=64)
    label = models.CharField(_("label"), max_length=100)
    confidence = models.FloatField(_("confidence"))
    # Out-of-distribution score on the backbone's features (higher: stranger), and whether it passed the
    # version's calibrated limit; None / False for models without that check.
    ood_score = models.FloatField(_("ood score"), null=True, blank=True)
    is_unfamiliar = models.BooleanField(_("is unfamiliar"), default=False)
    # The best categories, best first: [[label, confidence], ...].
    top = models.JSONField(_("top"), default=list)
    # The backbone's pooled features, L2-normalised float16 bytes (classifier.services.similarity); null for
    # models without features. Comparable only with embeddings of the same model version.
    embedding = models.BinaryField(_("embedding"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("prediction")
        verbose_name_plural = _("predictions")
        ordering = ["-created_at", "-pk"]
        constraints = [
            # One record per photo and version: a redelivered message adds nothing.
            models.UniqueConstraint(
                fields=["product", "model_version", "image_sha256"],
                name="one_prediction_per_photo_and_version",
            )
        ]

    def __str__(self) -> str:
        return f"{self.product_id}: {self.label} ({self.confidence:.1%}, {self.model_version_id})"


class DriftAlert(models.Model):
    """A day on which a model version filed a share of products automatically well below its validation
    figure (classifier.services.drift): logged once, when first seen, and listed on the dashboard."""

    model_version = models.ForeignKey(
        ModelVersion, verbose_name=_("model version"), on_delete=models.CASCADE, related_name="drift_alerts"
    )
    day = models.DateField(_("day"))
    predictions = models.PositiveIntegerField(_("predictions"))
    auto_filed_share = models.FloatField(_("auto filed share"))
    validation_share = models.FloatField(_("validation share"))
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("drift alert")
        verbose_name_plural = _("drift alerts")
        ordering = ["-day", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["model_version", "day"], name="one_drift_alert_per_version_and_day"
            )
        ]

    def __str__(self) -> str:
        return gettext("%(version)s on %(day)s") % {"version": self.model_version, "day": self.day}
