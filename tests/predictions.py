"""A model version's answer for a photo, recorded the way the inference worker records it."""

from catalog.models import Product
from classifier.models import ModelVersion
from classifier.services.classification import PhotoPrediction, prediction_record


def prediction_apply(
    *, product_id: int, image_sha256: str, label: str, confidence: float, model_version: ModelVersion
) -> Product:
    return prediction_record(
        product_id=product_id,
        image_sha256=image_sha256,
        prediction=PhotoPrediction(label=label, confidence=confidence, top=[(label, confidence)]),
        model_version=model_version,
    )
