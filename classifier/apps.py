from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ClassifierConfig(AppConfig):
    name = "classifier"
    verbose_name = _("Classifier")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from catalog.signals import product_photos_changed
        from classifier.services.classification import on_product_photos_changed

        # The catalog announces new photos; the classifier sends them to the inference queue.
        product_photos_changed.connect(on_product_photos_changed, dispatch_uid="classifier-enqueue-photos")
