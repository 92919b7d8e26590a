from django.conf import settings
from django.db import models
from django.db.models import Q

from classifier.validators import validate_threshold


class ModelVersion(models.Model):
    """One trained classifier artifact on disk, with what it was trained on and how well it did."""

    name = models.CharField(max_length=100, unique=True)
    # Directory with model.keras + metadata.json (classifier.ml.artifact); relative to VITRINE_MODELS_DIR.
    artifact_path = models.CharField(max_length=500)
    # With VITRINE_STORAGE=s3: the key prefix of its files under the bucket's models/ (model.keras's sha256);
    # every host fetches them from there (classifier.artifacts). Blank: on the registering host's disk only.
    artifact_key = models.CharField(max_length=100, blank=True)
    model_sha256 = models.CharField(max_length=64)
    architecture = models.CharField(max_length=64)
    class_names = models.JSONField(default=list)
    metrics = models.JSONField(default=dict, blank=True)
    data_fingerprint = models.CharField(max_length=64, blank=True)
    # Predictions at or above this confidence file the product automatically.
    threshold = models.FloatField(null=True, blank=True, validators=[validate_threshold])
    # Each category its own threshold where the version's held-out photos could pick one (metrics
    # "class_thresholds"); the others, and every category when off, use `threshold`.
    per_class_thresholds = models.BooleanField(
        "per-category thresholds",
        default=True,
        help_text="File each category at the threshold picked for it on held-out photos, where one was.",
    )
    # Off for a model never validated on product photos (a fallback): every prediction waits for a person.
    files_automatically = models.BooleanField(default=True)
    is_active = models.BooleanField(default=False)
    activated_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
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
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"
        SKIPPED = "skipped", "Skipped"

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    params = models.JSONField(default=dict, blank=True)
    # Latest progress event from classifier.ml.train (epoch, epochs, loss, accuracy, eta_s...).
    progress = models.JSONField(default=dict, blank=True)
    data_fingerprint = models.CharField(max_length=64, blank=True)
    error = models.TextField(blank=True)
    # What came of the run, in words: what it trained on, why it was skipped or cancelled.
    message = models.TextField(blank=True)
    cancel_requested = models.BooleanField(default=False)
    # The worker that claimed the run, and when it last said it is alive: a silent run is swept as failed.
    worker = models.CharField(max_length=255, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    model_version = models.OneToOneField(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="training_run"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Training run {self.pk} ({self.status})"


class ModelActivation(models.Model):
    """One switch of the active model version; the history a roll back walks."""

    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="activations")
    # The version that was active until this switch (None: none was).
    previous = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    is_roll_back = models.BooleanField(default=False)
    activated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    activated_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-activated_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.model_version} activated {self.activated_at:%Y-%m-%d %H:%M}"


class BulkJob(models.Model):
    """Re-classifying many products with the active model in the background, chunk by chunk."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    # The chosen products (ascending ids), or None for every product up to last_product_id.
    product_ids = models.JSONField(null=True, blank=True)
    last_product_id = models.BigIntegerField(default=0)
    chunk_size = models.PositiveIntegerField(default=64)
    # Id of the last product handled: a restarted job goes on after it.
    cursor = models.BigIntegerField(default=0)
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    # Deliveries of the chunk after the cursor that started and never ended: each is a worker that died on it.
    chunk_attempts = models.PositiveSmallIntegerField(default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "bulk re-classification"
        verbose_name_plural = "bulk re-classifications"

    def __str__(self) -> str:
        return f"Re-classification {self.pk} ({self.status})"


class Prediction(models.Model):
    """What a model version said about one photo of a product: the classifier's record, kept as history.

    The product's filing (category, status) is the catalog's, decided from the latest prediction.
    """

    product = models.ForeignKey("catalog.Product", on_delete=models.CASCADE, related_name="predictions")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="predictions")
    # The photo (by content) the prediction was made for.
    image_sha256 = models.CharField(max_length=64)
    label = models.CharField(max_length=100)
    confidence = models.FloatField()
    # Out-of-distribution score on the backbone's features (higher: stranger), and whether it passed the
    # version's calibrated limit; None / False for models without that check.
    ood_score = models.FloatField(null=True, blank=True)
    is_unfamiliar = models.BooleanField(default=False)
    # The best categories, best first: [[label, confidence], ...].
    top = models.JSONField(default=list)
    # The backbone's pooled features, L2-normalised float16 bytes (classifier.services.similarity); null for
    # models without features. Comparable only with embeddings of the same model version.
    embedding = models.BinaryField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
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

    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="drift_alerts")
    day = models.DateField()
    predictions = models.PositiveIntegerField()
    auto_filed_share = models.FloatField()
    validation_share = models.FloatField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-day", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["model_version", "day"], name="one_drift_alert_per_version_and_day"
            )
        ]

    def __str__(self) -> str:
        return f"{self.model_version} on {self.day}"
