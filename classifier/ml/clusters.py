"""Photos that look alike: groups of embeddings for the review queue's "new categories to consider".

Average-linkage agglomerative grouping (UPGMA) on cosine similarity: every photo starts alone, and the two
groups whose photos are the most similar on average (mean similarity over every cross pair) merge, as long
as that mean reaches `similarity`. Since each merge joins two groups whose own pairs already average at least
`similarity` with cross pairs that do too, every group's mean pairwise similarity is at least `similarity`.
numpy only, deterministic (ties go to the lowest indices); O(N^2) memory and O(N^3) time at worst, so the
caller bounds N.
"""

import numpy as np


def alike_groups(embeddings: np.ndarray, *, similarity: float, min_size: int) -> list[np.ndarray]:
    """Indices of the groups of at least `min_size` rows of `embeddings` (N, D) whose members' mean pairwise
    cosine similarity is at least `similarity`, largest group first (then by lowest index); each group's
    indices ascending. A row of zeros (a photo without an embedding) joins no group."""
    vectors = np.asarray(embeddings, dtype=np.float64)
    count = len(vectors)
    if count == 0:
        return []
    norms = np.linalg.norm(vectors, axis=1)
    present = norms > 0
    unit = vectors / np.where(present, norms, 1.0)[:, np.newaxis]
    linkage = unit @ unit.T
    linkage[~present, :] = -np.inf
    linkage[:, ~present] = -np.inf
    np.fill_diagonal(linkage, -np.inf)
    sizes = np.ones(count)
    members: list[list[int]] = [[index] for index in range(count)]
    for _ in range(count - 1):
        # The matrix is symmetric, so the first maximum in row-major order has first < second.
        first, second = divmod(int(np.argmax(linkage)), count)
        if linkage[first, second] < similarity:
            break
        merged = (sizes[first] * linkage[first] + sizes[second] * linkage[second]) / (
            sizes[first] + sizes[second]
        )
        linkage[first, :] = merged
        linkage[:, first] = merged
        linkage[second, :] = -np.inf
        linkage[:, second] = -np.inf
        linkage[first, first] = -np.inf
        sizes[first] += sizes[second]
        members[first] += members[second]
        members[second] = []
    groups = [sorted(group) for group in members if len(group) >= min_size]
    groups.sort(key=lambda group: (-len(group), group[0]))
    return [np.array(group, dtype=np.int64) for group in groups]
