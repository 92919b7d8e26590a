import secrets
import uuid
from pathlib import PurePath

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext, pgettext_lazy
from django.utils.translation import gettext_lazy as _

from catalog.storefront_cache import catalog_changed


def product_image_path(instance: models.Model, filename: str) -> str:
    """Store uploads under a random name: the client's file name is never trusted or kept."""
    suffix = PurePath(filename).suffix.lower()[:8]
    return f"products/{uuid.uuid4().hex[:2]}/{uuid.uuid4().hex}{suffix}"


class CatalogQuerySet(models.QuerySet):
    """The writes that send no signal tell the storefront cache, as save() and delete() do (catalog.apps):
    no writer of products or categories can forget to."""

    def update(self, **kwargs) -> int:
        rows = super().update(**kwargs)
        if rows:
            catalog_changed(using=self.db)
        return rows

    def bulk_create(self, objs, *args, **kwargs) -> list:
        created = super().bulk_create(objs, *args, **kwargs)
        if created:
            catalog_changed(using=self.db)
        return created

    def bulk_update(self, objs, fields, *args, **kwargs) -> int:
        rows = super().bulk_update(objs, fields, *args, **kwargs)
        if rows:
            catalog_changed(using=self.db)
        return rows


class Category(models.Model):
    name = models.CharField(_("name"), max_length=100, unique=True)
    slug = models.SlugField(_("slug"), max_length=100, unique=True)
    # Retired categories keep their products and history but receive no new ones.
    is_active = models.BooleanField(pgettext_lazy("category", "active"), default=True)
    # Set when merged into another category: a model class of this name then files products there.
    merged_into = models.ForeignKey(
        "self",
        verbose_name=_("merged into"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="merged_from",
        editable=False,
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    objects = CatalogQuerySet.as_manager()

    class Meta:
        verbose_name = _("category")
        verbose_name_plural = _("categories")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Product(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        QUEUED = "queued", _("Queued")
        CLASSIFIED = "classified", _("Classified")
        NEEDS_REVIEW = "needs_review", _("Needs review")
        FAILED = "failed", _("Failed")

    class CategorySource(models.TextChoices):
        NONE = "", _("Not set")
        PREDICTED = "predicted", _("Predicted")
        PERSON = "person", _("Set by a person")

    class ReviewReason(models.TextChoices):
        NONE = "", "—"
        LOW_CONFIDENCE = "low_confidence", _("The model is not sure enough")
        UNFAMILIAR = "unfamiliar", _("Not one of your categories")
        NOT_VALIDATED = "not_validated", _("The model was never validated on product photos")
        RETIRED_CATEGORY = "retired_category", _("The suggested category is retired")

    class DuplicateKind(models.TextChoices):
        NONE = "", "—"
        HASH = "hash", _("Same photo (perceptual hash)")
        EMBEDDING = "embedding", _("Similar photo (model embedding)")

    name = models.CharField(_("name"), max_length=200)
    slug = models.SlugField(_("slug"), max_length=220, unique=True)
    description = models.TextField(_("description"), blank=True)
    price = models.DecimalField(
        _("price"), max_digits=10, decimal_places=2, validators=[MinValueValidator(0)]
    )
    sku = models.CharField(_("SKU"), max_length=64, unique=True)
    image = models.ImageField(_("image"), upload_to=product_image_path, max_length=255)
    # sha256 of the image bytes: detects a changed photo and keeps one photo out of two data splits.
    image_sha256 = models.CharField(_("image sha256"), max_length=64, db_index=True, editable=False)
    is_published = models.BooleanField(_("published"), default=True)
    # The product's dominant colours in its photo (catalog.colors.COLOR_NAMES), the largest share first.
    colors = models.JSONField(_("colors"), default=list, blank=True, editable=False)
    # 64-bit perceptual hash of the photo (catalog.photo_hash): finds re-encoded or resized copies.
    photo_hash = models.BigIntegerField(_("photo hash"), null=True, blank=True, editable=False, db_index=True)
    # "Looks like product X": set once per photo (by hash at upload, or by the classifier's embedding when it
    # arrives), cleared when the photo changes; nothing is refused, a person decides.
    duplicate_of = models.ForeignKey(
        "self",
        verbose_name=_("looks like"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
    )
    duplicate_kind = models.CharField(
        _("duplicate kind"),
        max_length=16,
        choices=DuplicateKind.choices,
        blank=True,
        default="",
        editable=False,
    )
    # Hash: how many of 64 bits differ (lower is closer); embedding: cosine similarity (higher is closer).
    duplicate_score = models.FloatField(_("duplicate score"), null=True, blank=True, editable=False)

    category = models.ForeignKey(
        Category,
        verbose_name=_("category"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="products",
    )
    category_source = models.CharField(
        _("category source"),
        max_length=16,
        choices=CategorySource.choices,
        default=CategorySource.NONE,
        blank=True,
    )
    suggested_category = models.ForeignKey(
        Category,
        verbose_name=_("suggested category"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    confidence = models.FloatField(_("confidence"), null=True, blank=True)
    # How far the photo lies from what the model was trained on (higher: stranger); None when not measured.
    unfamiliarity = models.FloatField(_("unfamiliarity"), null=True, blank=True)
    # Why the latest prediction did not file the product by itself; empty when it did (or a person decided).
    review_reason = models.CharField(
        _("review reason"), max_length=32, choices=ReviewReason.choices, blank=True, default=""
    )
    model_version = models.ForeignKey(
        "classifier.ModelVersion",
        verbose_name=_("model version"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    # The image hash the current prediction was made for, so a rerun of an old task changes nothing.
    classified_sha256 = models.CharField(_("classified sha256"), max_length=64, blank=True, editable=False)
    status = models.CharField(
        _("status"), max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True
    )
    status_changed_at = models.DateTimeField(_("status changed at"), db_index=True)
    classification_error = models.TextField(_("classification error"), blank=True)
    # Deliveries of this photo's classification that started and never ended: each a worker that died on it.
    classification_attempts = models.PositiveSmallIntegerField(
        _("classification attempts"), default=0, editable=False
    )
    reviewed_at = models.DateTimeField(_("reviewed at"), null=True, blank=True)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("reviewed by"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
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
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    objects = CatalogQuerySet.as_manager()

    class Meta:
        verbose_name = _("product")
        verbose_name_plural = _("products")
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(price__gte=0), name="product_price_not_negative"),
            models.CheckConstraint(
                condition=Q(confidence__isnull=True) | Q(confidence__gte=0, confidence__lte=1),
                name="product_confidence_between_0_and_1",
            ),
        ]
        indexes = [models.Index(fields=["status", "status_changed_at"])]

    def __str__(self) -> str:
        return self.name


# A product in these statuses waits for a classification; in DONE_STATUSES it has one for its current photo.
WAITING_STATUSES = (Product.Status.PENDING, Product.Status.QUEUED)
DONE_STATUSES = (Product.Status.CLASSIFIED, Product.Status.NEEDS_REVIEW)


class ProductImage(models.Model):
    """Further photos of a product; only the main image is classified."""

    product = models.ForeignKey(
        Product, verbose_name=_("product"), on_delete=models.CASCADE, related_name="images"
    )
    image = models.ImageField(_("image"), upload_to=product_image_path, max_length=255)
    position = models.PositiveSmallIntegerField(_("position"), default=0)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("product image")
        verbose_name_plural = _("product images")
        ordering = ["position", "id"]

    def __str__(self) -> str:
        photo = gettext("%(product)s photo %(position)s")
        return photo % {"product": self.product, "position": self.position}


class ReviewQueueItem(Product):
    """A product as the review queue shows it: waiting for a person to confirm or correct its category."""

    class Meta:
        verbose_name = _("review queue item")
        verbose_name_plural = _("review queue")
        proxy = True


def webhook_secret_new() -> str:
    return secrets.token_urlsafe(32)


class WebhookEndpoint(models.Model):
    """A storefront's URL that is told, by signed POSTs, when products are classified or change category."""

    class Event(models.TextChoices):
        PRODUCT_CLASSIFIED = "product.classified", _("A product was classified (filed, or sent to review)")
        PRODUCT_CATEGORY_CHANGED = "product.category_changed", _("A product's category changed")

    name = models.CharField(_("name"), max_length=100)
    url = models.URLField(
        _("url"), max_length=500, help_text=_("Receives a POST with a JSON body for each event.")
    )
    events = models.JSONField(_("events"), default=list, help_text=_("The events this URL is told about."))
    secret = models.CharField(
        _("secret"),
        max_length=100,
        default=webhook_secret_new,
        help_text=_(
            "Each POST carries X-Vitrine-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of '<t>.<body>' "
            "with this secret>; the receiver recomputes it (README, Webhooks)."
        ),
    )
    is_active = models.BooleanField(_("active"), default=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("webhook endpoint")
        verbose_name_plural = _("webhook endpoints")
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name


class WebhookDelivery(models.Model):
    """One event for one endpoint: sent by a worker, tried again with backoff until it is answered 2xx."""

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        DELIVERED = "delivered", _("Delivered")
        FAILED = "failed", _("Failed (gave up)")

    endpoint = models.ForeignKey(
        WebhookEndpoint, verbose_name=_("endpoint"), on_delete=models.CASCADE, related_name="deliveries"
    )
    # Unique per event and endpoint: the receiver can drop a delivery it has already seen.
    delivery_id = models.UUIDField(_("delivery id"), default=uuid.uuid4, unique=True, editable=False)
    event = models.CharField(_("event"), max_length=50, choices=WebhookEndpoint.Event.choices)
    payload = models.JSONField(_("payload"))
    status = models.CharField(_("status"), max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0)
    next_attempt_at = models.DateTimeField(_("next attempt at"))
    last_status_code = models.PositiveSmallIntegerField(_("last status code"), null=True, blank=True)
    last_error = models.TextField(_("last error"), blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    delivered_at = models.DateTimeField(_("delivered at"), null=True, blank=True)

    class Meta:
        verbose_name = _("webhook delivery")
        verbose_name_plural = _("webhook deliveries")
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "next_attempt_at"])]

    def __str__(self) -> str:
        return gettext("%(event)s to %(endpoint)s") % {"event": self.event, "endpoint": self.endpoint}


def product_import_photos_path(instance: models.Model, filename: str) -> str:
    """The ZIP of an import is kept under a random name until its job ends; web and workers read it by key."""
    return f"imports/{uuid.uuid4().hex}.zip"


class ProductImport(models.Model):
    """A CSV of products with a ZIP of their photos: previewed, then imported row by row in the background."""

    class Status(models.TextChoices):
        PREVIEW = "preview", "Preview: nothing saved yet"
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PREVIEW, db_index=True)
    csv_name = models.CharField("CSV file", max_length=255)
    zip_name = models.CharField("ZIP file", max_length=255)
    photos = models.FileField(upload_to=product_import_photos_path, max_length=255, blank=True)
    # The rows that passed the preview, in file order: {"row", "sku", "name", "price", "description",
    # "category_id", "image"}; the job imports exactly these.
    rows = models.JSONField(default=list, blank=True)
    # Rows refused by the preview: [{"row", "sku", "reasons": [...]}], never imported.
    row_errors = models.JSONField(default=list, blank=True)
    # The preview's plan, by SKU at preview time.
    new_count = models.PositiveIntegerField(default=0)
    update_count = models.PositiveIntegerField(default=0)
    unchanged_count = models.PositiveIntegerField(default=0)
    # Index in `rows` of the next row to import: a redelivered task goes on from here.
    cursor = models.PositiveIntegerField(default=0)
    created = models.PositiveIntegerField(default=0)
    updated = models.PositiveIntegerField(default=0)
    unchanged = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    # Rows that failed at import time (a SKU taken meanwhile, a category deleted), shaped like row_errors.
    import_errors = models.JSONField(default=list, blank=True)
    # Why the job as a whole stopped (its ZIP could not be read...); the rows saved so far stay.
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "product import"

    def __str__(self) -> str:
        return f"Import {self.pk} ({self.csv_name})"

    @property
    def total(self) -> int:
        return len(self.rows)


class LanguagePreference(models.Model):
    """The language a person chose on the admin's Language page; without one, their browser's is used."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        verbose_name=_("user"),
        on_delete=models.CASCADE,
        related_name="language_preference",
    )
    # Empty: follow the browser (Accept-Language).
    language = models.CharField(_("language"), max_length=10, choices=settings.LANGUAGES, blank=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("language preference")
        verbose_name_plural = _("language preferences")

    def __str__(self) -> str:
        return f"{self.user}: {self.language or 'browser'}"
