"""Out-of-distribution score: how unlike every known category a photo's backbone features are.

A Gaussian model of the pooled features (Lee et al., 2018, "Mahalanobis" detector, in a PCA subspace):
each category is a Gaussian with its own mean and a covariance shared by all categories. In the top
`dimensions` principal directions of the training features the shared covariance is estimated in full; the
remaining directions get one isotropic variance (as in probabilistic PCA), so the statistics stay small while
a photo that leaves the subspace still scores high. The score is the squared Mahalanobis distance to the
nearest category mean; a photo scoring above the threshold is "unfamiliar". The threshold is the score that
keeps `keep_rate` of held-out photos of the known categories. numpy only, deterministic.

That check keeps far-off photos out (a cat, a rocket), not near ones: a vest sits close to the outerwear.
The "kind" score (Ren et al., 2021, "A simple fix to Mahalanobis distance for improving near-OOD
detection") is the distance to the nearest category minus the distance to one background Gaussian fitted on
all training features, in the same subspace: the directions every garment varies along cancel out, what is
left is how much closer the photo is to garments in general than to any known kind. A photo scoring above
`kind_threshold` is of a kind the model was not taught. Statistics saved before this check have no kind
arrays and keep working with the far-off check alone.
"""

import pathlib
from dataclasses import dataclass, replace

import numpy as np

# The file an artifact keeps the statistics in, beside model.keras.
DEFAULT_DIMENSIONS = 48
DEFAULT_KEEP_RATE = 0.95
# Added to the shared covariance's diagonal, as a share of its mean variance, so its inverse stays stable.
COVARIANCE_SHRINKAGE = 1e-3
ARRAY_NAMES = (
    "mean",
    "components",
    "class_means",
    "precision",
    "residual_variance",
    "threshold",
    "keep_rate",
)
KIND_ARRAY_NAMES = ("background_mean", "background_precision", "kind_threshold", "kind_keep_rate")


class OodError(ValueError):
    """Statistics that cannot be fitted or loaded (too few photos, wrong shapes, missing arrays)."""


@dataclass(frozen=True, eq=False)
class OodModel:
    mean: np.ndarray  # (D,) mean feature of the training photos
    components: np.ndarray  # (D, k) orthonormal principal directions
    class_means: np.ndarray  # (C, k) category means in the subspace
    precision: np.ndarray  # (k, k) inverse of the shared within-category covariance in the subspace
    residual_variance: float  # per-dimension variance left outside the subspace
    threshold: float = float("inf")  # scores above it are unfamiliar
    keep_rate: float = 1.0  # share of held-out known photos at or under the threshold
    # The kind check: one Gaussian of all training features in the subspace; None in older statistics.
    background_mean: np.ndarray | None = None  # (k,)
    background_precision: np.ndarray | None = None  # (k, k)
    kind_threshold: float = float("inf")  # kind scores above it are of a kind the model was not taught
    kind_keep_rate: float = 1.0

    @property
    def checks_kind(self) -> bool:
        return self.background_mean is not None

    def scores(self, features: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance of each feature row to its nearest category (float64, (N,))."""
        centred = np.asarray(features, dtype=np.float64) - self.mean
        inside = centred @ self.components
        outside = centred - inside @ self.components.T
        offsets = inside[:, np.newaxis, :] - self.class_means[np.newaxis, :, :]
        distances = np.einsum("nck,kl,ncl->nc", offsets, self.precision, offsets)
        return distances.min(axis=1) + (outside**2).sum(axis=1) / self.residual_variance

    def kind_scores(self, features: np.ndarray) -> np.ndarray:
        """Relative Mahalanobis distance: to the nearest category minus to all training photos ((N,))."""
        if not self.checks_kind:
            raise OodError("these statistics have no kind check (fitted before it existed)")
        inside = (np.asarray(features, dtype=np.float64) - self.mean) @ self.components
        offsets = inside[:, np.newaxis, :] - self.class_means[np.newaxis, :, :]
        nearest = np.einsum("nck,kl,ncl->nc", offsets, self.precision, offsets).min(axis=1)
        background = inside - self.background_mean
        return nearest - np.einsum("nk,kl,nl->n", background, self.background_precision, background)

    def is_unfamiliar(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores) > self.threshold

    def is_unknown_kind(self, kind_scores: np.ndarray) -> np.ndarray:
        return np.asarray(kind_scores) > self.kind_threshold

    def with_threshold(
        self, held_out_scores: np.ndarray, *, keep_rate: float = DEFAULT_KEEP_RATE
    ) -> "OodModel":
        """A copy whose threshold keeps `keep_rate` of these held-out scores of known photos."""
        return replace(self, threshold=_keeping(held_out_scores, keep_rate), keep_rate=keep_rate)

    def with_kind_threshold(self, held_out_kind_scores: np.ndarray, *, keep_rate: float) -> "OodModel":
        """A copy whose kind threshold keeps `keep_rate` of these held-out kind scores of known photos."""
        if not self.checks_kind:
            raise OodError("these statistics have no kind check (fitted before it existed)")
        threshold = _keeping(held_out_kind_scores, keep_rate)
        return replace(self, kind_threshold=threshold, kind_keep_rate=keep_rate)

    def arrays(self, *, prefix: str = "") -> dict[str, np.ndarray]:
        arrays = {
            f"{prefix}mean": self.mean.astype(np.float32),
            f"{prefix}components": self.components.astype(np.float32),
            f"{prefix}class_means": self.class_means.astype(np.float32),
            f"{prefix}precision": self.precision.astype(np.float32),
            f"{prefix}residual_variance": np.float64(self.residual_variance),
            f"{prefix}threshold": np.float64(self.threshold),
            f"{prefix}keep_rate": np.float64(self.keep_rate),
        }
        if self.checks_kind:
            arrays |= {
                f"{prefix}background_mean": self.background_mean.astype(np.float32),
                f"{prefix}background_precision": self.background_precision.astype(np.float32),
                f"{prefix}kind_threshold": np.float64(self.kind_threshold),
                f"{prefix}kind_keep_rate": np.float64(self.kind_keep_rate),
            }
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], *, prefix: str = "") -> "OodModel":
        missing = [name for name in ARRAY_NAMES if f"{prefix}{name}" not in arrays]
        if missing:
            raise OodError(
                f"out-of-distribution statistics lack {', '.join(prefix + name for name in missing)}"
            )
        model = cls(
            mean=np.asarray(arrays[f"{prefix}mean"], dtype=np.float64),
            components=np.asarray(arrays[f"{prefix}components"], dtype=np.float64),
            class_means=np.asarray(arrays[f"{prefix}class_means"], dtype=np.float64),
            precision=np.asarray(arrays[f"{prefix}precision"], dtype=np.float64),
            residual_variance=float(arrays[f"{prefix}residual_variance"]),
            threshold=float(arrays[f"{prefix}threshold"]),
            keep_rate=float(arrays[f"{prefix}keep_rate"]),
        )
        kind = [name for name in KIND_ARRAY_NAMES if f"{prefix}{name}" in arrays]
        if kind and len(kind) != len(KIND_ARRAY_NAMES):
            missing = [prefix + name for name in KIND_ARRAY_NAMES if name not in kind]
            raise OodError(f"out-of-distribution statistics lack {', '.join(missing)}")
        if kind:
            model = replace(
                model,
                background_mean=np.asarray(arrays[f"{prefix}background_mean"], dtype=np.float64),
                background_precision=np.asarray(arrays[f"{prefix}background_precision"], dtype=np.float64),
                kind_threshold=float(arrays[f"{prefix}kind_threshold"]),
                kind_keep_rate=float(arrays[f"{prefix}kind_keep_rate"]),
            )
        (dims, k), (_, k_means), k_precision = (
            model.components.shape,
            model.class_means.shape,
            model.precision.shape,
        )
        kind_shapes_fit = not model.checks_kind or (
            model.background_mean.shape == (k,) and model.background_precision.shape == (k, k)
        )
        if model.mean.shape != (dims,) or k_means != k or k_precision != (k, k) or not kind_shapes_fit:
            raise OodError("out-of-distribution statistics have inconsistent shapes")
        return model


def fit_ood(features: np.ndarray, labels: np.ndarray, *, dimensions: int = DEFAULT_DIMENSIONS) -> OodModel:
    """Class means and shared covariance of training features; the threshold is set by with_threshold()."""
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    num_classes = int(labels.max()) + 1 if len(labels) else 0
    if len(features) <= dimensions or num_classes < 2 or len(np.unique(labels)) != num_classes:
        raise OodError(f"need more than {dimensions} photos covering every category, got {len(features)}")
    mean = features.mean(axis=0)
    centred = features - mean
    eigenvalues, eigenvectors = np.linalg.eigh(centred.T @ centred / len(centred))
    components = eigenvectors[:, ::-1][:, :dimensions]
    # Eigenvectors have no preferred sign; fixing it makes the stored statistics reproducible.
    components = components * np.where(
        components[np.abs(components).argmax(axis=0), range(dimensions)] < 0, -1, 1
    )
    inside = centred @ components
    class_means = np.stack([inside[labels == c].mean(axis=0) for c in range(num_classes)])
    within = inside - class_means[labels]
    background_mean = inside.mean(axis=0)
    background = inside - background_mean
    outside = centred - inside @ components.T
    residual_variance = float((outside**2).sum() / (len(outside) * (features.shape[1] - dimensions)))
    return OodModel(
        mean=mean,
        components=components,
        class_means=class_means,
        precision=_shrunk_inverse(within.T @ within / len(within)),
        residual_variance=residual_variance,
        background_mean=background_mean,
        background_precision=_shrunk_inverse(background.T @ background / len(background)),
    )


def _shrunk_inverse(covariance: np.ndarray) -> np.ndarray:
    dimensions = len(covariance)
    return np.linalg.inv(
        covariance + COVARIANCE_SHRINKAGE * np.trace(covariance) / dimensions * np.eye(dimensions)
    )


def _keeping(held_out_scores: np.ndarray, keep_rate: float) -> float:
    """The score that keeps `keep_rate` of these held-out scores of known photos at or under it."""
    if not 0.0 < keep_rate <= 1.0 or len(held_out_scores) == 0:
        raise OodError(
            f"need held-out scores and a keep rate in (0, 1], got {len(held_out_scores)}, {keep_rate}"
        )
    return float(np.quantile(np.asarray(held_out_scores, dtype=np.float64), keep_rate))


def save_ood(model: OodModel, path: pathlib.Path) -> None:
    np.savez(pathlib.Path(path), **model.arrays())


def load_ood(path: pathlib.Path) -> OodModel:
    try:
        with np.load(pathlib.Path(path)) as stored:
            return OodModel.from_arrays({name: stored[name] for name in stored.files})
    except (OSError, ValueError) as error:
        if isinstance(error, OodError):
            raise
        raise OodError(f"{path}: cannot read out-of-distribution statistics ({error})") from error
