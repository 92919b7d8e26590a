"""Unit-length test embeddings that point along one axis, optionally tilted towards the next one."""

import numpy as np

from classifier.ml.serving import embeddings_normalised

DIMENSIONS = 8


def direction(axis: int, tilt: float = 0.0) -> np.ndarray:
    features = np.zeros((1, DIMENSIONS), dtype=np.float32)
    features[0, axis] = 1.0
    features[0, (axis + 1) % DIMENSIONS] = tilt
    return embeddings_normalised(features)[0]
