"""What the catalog's admin pages share (the classifier's admin pages use it too)."""

from django.contrib import admin
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_POST

from catalog.models import Product

# Views that change data answer POST only; a link or a prefetch must not file a product or start anything.
post_only = method_decorator(require_POST)


def image_tag(image, *, size: int) -> str:
    if not image:
        return ""
    return format_html(
        '<img src="{}" alt="" width="{}" height="{}" style="object-fit: contain; background: #fff">',
        image.url,
        size,
        size,
    )


class ConfidenceColumn:
    """The prediction's confidence as a percentage, for the product lists."""

    @admin.display(description=_("Confidence"), ordering="confidence")
    def confidence_percent(self, obj: Product) -> str:
        if obj.confidence is None:
            return self.get_empty_value_display()
        return f"{obj.confidence:.1%}"
