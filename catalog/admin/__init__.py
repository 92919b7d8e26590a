"""The catalog's admin pages, one module per entity; Django discovers this package and each module registers
its pages."""

from catalog.admin import categories, imports, products, review_queue, webhooks  # noqa: F401
