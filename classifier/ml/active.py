"""What to label next: photos ordered by what a person's label is expected to teach the model.

A photo is worth labelling when the model hesitates between two categories (small margin between its two best
confidences), and worth less when it looks like a photo already chosen: twenty shots of the same dress teach
little more than one. The order is greedy: each step takes the photo with the highest

    uncertainty - DIVERSITY * (cosine similarity to the most similar photo already taken)

among the CANDIDATES most uncertain photos, for the first `window` places; the rest follow by uncertainty.
"""

import numpy as np

# Weight of likeness to an earlier pick against the margin's uncertainty (both on a 0-1 scale).
DIVERSITY = 0.5
# Only this many of the most uncertain photos compete for the diverse places (bounds the work per order).
CANDIDATES = 1000


def margin_uncertainty(probabilities: np.ndarray) -> np.ndarray:
    """1 - (best confidence - second best), per row of (N, C) or (N, k >= 2) best-first confidences."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.shape[1] < 2:
        return 1.0 - probabilities[:, 0]
    two = -np.sort(-probabilities, axis=1)[:, :2]
    return 1.0 - (two[:, 0] - two[:, 1])


def label_next_order(
    uncertainty: np.ndarray,
    embeddings: np.ndarray | None = None,
    *,
    window: int,
    diversity: float = DIVERSITY,
    candidates: int = CANDIDATES,
) -> np.ndarray:
    """Indices of all N photos, the most useful to label first.

    embeddings: (N, D), L2-normalised, or None (then by uncertainty alone); a row of zeros is a photo
    without an embedding and is never penalised for likeness. Ties keep the given order: deterministic.
    """
    uncertainty = np.asarray(uncertainty, dtype=np.float64)
    by_uncertainty = np.argsort(-uncertainty, kind="stable")
    if embeddings is None or len(uncertainty) == 0 or window <= 0:
        return by_uncertainty
    pool = by_uncertainty[:candidates]
    vectors = np.asarray(embeddings, dtype=np.float32)[pool]
    nearest = np.zeros(len(pool))
    available = np.ones(len(pool), dtype=bool)
    chosen = []
    for _ in range(min(window, len(pool))):
        score = np.where(available, uncertainty[pool] - diversity * nearest, -np.inf)
        pick = int(np.argmax(score))
        chosen.append(pick)
        available[pick] = False
        nearest = np.maximum(nearest, vectors @ vectors[pick])
    taken = pool[chosen]
    return np.concatenate([taken, by_uncertainty[~np.isin(by_uncertainty, taken)]])
