"""Forms whose photo fields check the uploaded bytes (catalog.validators), never the file name."""

from django import forms
from django.contrib.admin.widgets import AdminFileWidget
from django.core.files.uploadedfile import UploadedFile
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from catalog.models import Category, Product, ProductImage
from catalog.photos import photo_files_delete_on_commit, photo_store
from catalog.validators import ACCEPT_ATTRIBUTE, validate_product_image

PHOTO_HELP_TEXT = _(
    "A JPEG, PNG, WebP or GIF photo; it is checked by content and stored under a random name, "
    "without its metadata (location, camera)."
)


def _photo_field() -> forms.FileField:
    # A plain FileField: forms.ImageField would decode the photo a second time and word the errors vaguely.
    return forms.FileField(
        label=_("Image"),
        allow_empty_file=True,
        help_text=PHOTO_HELP_TEXT,
        widget=AdminFileWidget(attrs={"accept": ACCEPT_ATTRIBUTE}),
    )


def _checked_photo(value: object) -> object:
    """A newly uploaded file is checked; the already stored photo of an edited product is kept as it is."""
    if isinstance(value, UploadedFile):
        validate_product_image(value)
    return value


class ProductAdminForm(forms.ModelForm):
    image = _photo_field()

    class Meta:
        model = Product
        fields = ["name", "description", "price", "sku", "image", "category", "is_published"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Retired categories take no new products, but a product already filed under one keeps it.
        current = Q(pk=self.instance.category_id) if self.instance.category_id else Q(pk__in=[])
        self.fields["category"].queryset = Category.objects.filter(Q(is_active=True) | current)

    def clean_image(self) -> object:
        return _checked_photo(self.cleaned_data.get("image"))


class ProductImageForm(forms.ModelForm):
    image = _photo_field()

    class Meta:
        model = ProductImage
        fields = ["image", "position"]

    def clean_image(self) -> object:
        return _checked_photo(self.cleaned_data.get("image"))

    def save(self, commit: bool = True) -> ProductImage:
        """A new photo is stored as served (catalog.photos); the one it replaces goes after commit."""
        if "image" in self.changed_data:
            stored = ProductImage.objects.filter(pk=self.instance.pk).values_list("image", flat=True)
            replaced = stored.first() if self.instance.pk else None
            self.instance.image = photo_store(owner=self.instance, upload=self.cleaned_data["image"])
            if replaced:
                photo_files_delete_on_commit(names=[replaced])
        return super().save(commit)
