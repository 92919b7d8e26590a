"""What the catalog announces. Other apps listen; the catalog imports none of them."""

from django.dispatch import Signal

# Sent after commit with `product_ids`: these products have a new or changed photo (or a person asked for
# them to be classified again) and wait, pending, for a classification.
product_photos_changed = Signal()
