"""The classifier's admin: model versions, predictions, training runs, bulk jobs, and its product action."""

from classifier.admin import background, model_versions, predictions, products, review_queue

__all__ = ["background", "model_versions", "predictions", "products", "review_queue"]
