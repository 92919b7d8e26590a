from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save
from django.utils.translation import gettext_lazy as _


def _storefront_row_changed(sender, using: str, **kwargs) -> None:
    from catalog.storefront_cache import catalog_changed

    catalog_changed(using=using)


class CatalogConfig(AppConfig):
    name = "catalog"
    verbose_name = _("Catalog")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from catalog.models import Category, Product
        from catalog.photos import connect_photo_file_removal

        connect_photo_file_removal()
        # Proxies (the review queue's products) send as themselves, so each is connected too.
        for model in self.get_models():
            if model._meta.concrete_model in (Product, Category):
                post_save.connect(_storefront_row_changed, sender=model, dispatch_uid=f"storefront-{model}")
                post_delete.connect(_storefront_row_changed, sender=model, dispatch_uid=f"storefront-{model}")
