"""Precision and recall of the "looks like product X" flag on clothing-small/validation.

    python bench/duplicates.py [--hash-distance 10] [--similarity 0.93]

The shop holds every validation photo; for each one, a copy re-encoded, resized, slightly cropped and
mirrored (bench/likeness.py) is uploaded and compared with all the photos, as the catalog and the classifier
do: first the perceptual hash (catalog.photo_hash, the photo and its mirror image, flag within
--hash-distance bits), else the starter model's embedding (flag at cosine similarity >= --similarity).
A flag is right when it names the copy's own original. Goal: precision and recall >= 0.95 both.

It also counts the photos that are not copies but would be flagged: each original uploaded after all the
others (some validation photos are near-identical shots of one product). The defaults are the settings'
(VITRINE_DUPLICATE_HASH_DISTANCE, VITRINE_DUPLICATE_SIMILARITY). Data sets: $VITRINE_DATASETS_DIR, else
../shared/datasets.
"""

import argparse
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from bench.common import datasets_dir  # noqa: E402
from bench.likeness import altered_copy, embeddings, starter_classifier, validation_photos  # noqa: E402
from catalog.photo_hash import hash_distances, photo_hashes  # noqa: E402
from classifier.ml.machine import machine_line  # noqa: E402
from classifier.ml.preprocess import open_image  # noqa: E402
from classifier.ml.serving import configure_tensorflow  # noqa: E402


def flags(
    *, hash_distance: np.ndarray, similarity: np.ndarray, max_bits: int, min_similarity: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per upload (row): the flagged photo's index (-1: none) and the kind (0 none, 1 hash, 2 embedding)."""
    by_hash = hash_distance.min(axis=1) <= max_bits
    by_embedding = ~by_hash & (similarity.max(axis=1) >= min_similarity)
    flagged = np.where(
        by_hash, hash_distance.argmin(axis=1), np.where(by_embedding, similarity.argmax(1), -1)
    )
    return flagged, by_hash * 1 + by_embedding * 2


def scores(flagged: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    right = int((flagged == truth).sum())
    return right / max(int((flagged >= 0).sum()), 1), right / len(truth)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hash-distance", type=int, default=10)
    parser.add_argument("--similarity", type=float, default=0.93)
    parser.add_argument("--datasets-dir", type=pathlib.Path, default=datasets_dir())
    args = parser.parse_args()
    print(machine_line())
    print(configure_tensorflow())

    paths, _ = validation_photos(args.datasets_dir)
    originals = [open_image(path) for path in paths]
    copies = [altered_copy(image) for image in originals]
    started = time.monotonic()
    original_hashes = np.array([photo_hashes(image) for image in originals], dtype=np.int64)
    copy_hashes = np.array([photo_hashes(image) for image in copies], dtype=np.int64)
    hash_ms = (time.monotonic() - started) * 1000 / (2 * len(paths))
    print(f"{len(paths)} photos; perceptual hash (photo and mirror) {hash_ms:.1f} ms per photo")
    classifier = starter_classifier()
    original_vectors = embeddings(classifier, originals).astype(np.float32)
    copy_vectors = embeddings(classifier, copies).astype(np.float32)

    def distances(new_hashes: np.ndarray) -> np.ndarray:
        # The nearer of the new photo's hash and its mirror image's, to each original.
        return np.array(
            [
                np.minimum(hash_distances(h, original_hashes[:, 0]), hash_distances(m, original_hashes[:, 0]))
                for h, m in new_hashes
            ]
        )

    truth = np.arange(len(paths))
    copy_distance, copy_similarity = distances(copy_hashes), copy_vectors @ original_vectors.T
    # An original uploaded after all the others: only the others count.
    self_distance, self_similarity = distances(original_hashes), original_vectors @ original_vectors.T
    np.fill_diagonal(self_distance, 10**6)
    np.fill_diagonal(self_similarity, -np.inf)

    print(f"\nflag = hash within {args.hash_distance} bits, else embedding similarity >= {args.similarity}")
    flagged, kind = flags(
        hash_distance=copy_distance,
        similarity=copy_similarity,
        max_bits=args.hash_distance,
        min_similarity=args.similarity,
    )
    precision, recall = scores(flagged, truth)
    print(
        f"altered copies: precision {precision:.3f}, recall {recall:.3f} (goal >= 0.95 both); "
        f"flagged by hash {int((kind == 1).sum())}, by embedding {int((kind == 2).sum())}, "
        f"not flagged {int((kind == 0).sum())}"
    )
    false_flags, _ = flags(
        hash_distance=self_distance,
        similarity=self_similarity,
        max_bits=args.hash_distance,
        min_similarity=args.similarity,
    )
    print(f"originals flagged as looking like another photo: {int((false_flags >= 0).sum())} of {len(paths)}")

    print("\nhash alone (bits: precision / recall):")
    for bits in (4, 6, 8, 10, 12, 14):
        flagged, _ = flags(
            hash_distance=copy_distance, similarity=copy_similarity, max_bits=bits, min_similarity=2
        )
        print(f"  {bits:2d}: {scores(flagged, truth)[0]:.3f} / {scores(flagged, truth)[1]:.3f}")
    print("embedding alone (similarity: precision / recall, originals flagged):")
    for threshold in (0.85, 0.9, 0.93, 0.95, 0.97):
        flagged, _ = flags(
            hash_distance=copy_distance, similarity=copy_similarity, max_bits=-1, min_similarity=threshold
        )
        others = int((self_similarity.max(axis=1) >= threshold).sum())
        precision, recall = scores(flagged, truth)
        print(f"  {threshold:.2f}: {precision:.3f} / {recall:.3f}, {others}")


if __name__ == "__main__":
    main()
