"""The out-of-distribution score on synthetic Gaussian clusters: far points flagged, known ones kept."""

import numpy as np
import pytest

from classifier.ml.ood import OodError, OodModel, fit_ood, load_ood, save_ood

DIMS = 64
CLASSES = 4


def clusters(*, per_class: int, seed: int, spread: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """CLASSES Gaussian clusters in DIMS dimensions with fixed, well-separated means."""
    means = np.random.default_rng(123).normal(0.0, 4.0, size=(CLASSES, DIMS))
    rng = np.random.default_rng(seed)
    scales = np.linspace(0.5, 2.0, DIMS)  # unequal variances, so the shared covariance matters
    labels = np.repeat(np.arange(CLASSES), per_class)
    return means[labels] + spread * rng.normal(size=(len(labels), DIMS)) * scales, labels


@pytest.fixture(scope="module")
def model() -> OodModel:
    features, labels = clusters(per_class=300, seed=0)
    held_out, _ = clusters(per_class=100, seed=1)
    fitted = fit_ood(features, labels, dimensions=16)
    fitted = fitted.with_threshold(fitted.scores(held_out), keep_rate=0.95)
    return fitted.with_kind_threshold(fitted.kind_scores(held_out), keep_rate=0.9)


def test_known_photos_are_kept_at_the_chosen_rate(model: OodModel):
    fresh, _ = clusters(per_class=500, seed=2)

    kept = float((~model.is_unfamiliar(model.scores(fresh))).mean())

    assert model.keep_rate == 0.95
    assert kept == pytest.approx(0.95, abs=0.025)


def test_far_points_are_unfamiliar(model: OodModel):
    rng = np.random.default_rng(3)
    elsewhere = rng.normal(0.0, 4.0, size=(200, DIMS)) + 25.0  # a cluster no category lives near
    blurred, _ = clusters(per_class=50, seed=4, spread=4.0)  # known means, far too much variation

    assert model.is_unfamiliar(model.scores(elsewhere)).all()
    assert model.is_unfamiliar(model.scores(blurred)).mean() > 0.95


def test_statistics_survive_a_save_and_load(model: OodModel, tmp_path):
    points, _ = clusters(per_class=20, seed=5)
    save_ood(model, tmp_path / "ood.npz")

    loaded = load_ood(tmp_path / "ood.npz")

    assert (loaded.threshold, loaded.keep_rate) == (pytest.approx(model.threshold), 0.95)
    assert (loaded.kind_threshold, loaded.kind_keep_rate) == (pytest.approx(model.kind_threshold), 0.9)
    np.testing.assert_allclose(loaded.scores(points), model.scores(points), rtol=1e-4)
    np.testing.assert_allclose(loaded.kind_scores(points), model.kind_scores(points), rtol=1e-3, atol=1e-2)


def test_damaged_statistics_are_refused(model: OodModel, tmp_path):
    arrays = model.arrays()
    del arrays["precision"]
    np.savez(tmp_path / "ood.npz", **arrays)

    with pytest.raises(OodError, match="precision"):
        load_ood(tmp_path / "ood.npz")
    (tmp_path / "garbage.npz").write_bytes(b"not numpy")
    with pytest.raises(OodError, match="cannot read"):
        load_ood(tmp_path / "garbage.npz")


def test_fitting_needs_enough_photos_of_every_category():
    features, labels = clusters(per_class=3, seed=6)

    with pytest.raises(OodError):
        fit_ood(features, labels, dimensions=16)


def test_the_kind_check_flags_a_category_it_was_not_taught():
    taught = np.isin(np.repeat(np.arange(CLASSES), 300), [0, 1, 2])
    features, labels = clusters(per_class=300, seed=7)
    fitted = fit_ood(features[taught], labels[taught], dimensions=16)
    held_out, held_out_labels = clusters(per_class=100, seed=8)
    known_held_out = held_out[held_out_labels != 3]
    checked = fitted.with_kind_threshold(fitted.kind_scores(known_held_out), keep_rate=0.95)
    fresh, fresh_labels = clusters(per_class=200, seed=9)

    flagged = checked.is_unknown_kind(checked.kind_scores(fresh))

    assert flagged[fresh_labels == 3].mean() > 0.9
    assert flagged[fresh_labels != 3].mean() == pytest.approx(0.05, abs=0.03)


def test_statistics_saved_before_the_kind_check_still_load(model: OodModel, tmp_path):
    points, _ = clusters(per_class=20, seed=10)
    arrays = model.arrays()
    for name in ("background_mean", "background_precision", "kind_threshold", "kind_keep_rate"):
        del arrays[name]
    np.savez(tmp_path / "ood.npz", **arrays)

    loaded = load_ood(tmp_path / "ood.npz")

    assert not loaded.checks_kind
    np.testing.assert_allclose(loaded.scores(points), model.scores(points), rtol=1e-4)
    with pytest.raises(OodError, match="no kind check"):
        loaded.kind_scores(points)
