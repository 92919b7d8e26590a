"""Coverage at >= 97 % precision on clothing-small/validation: one threshold for all categories vs one per
category, with the starter model's recipe.

    python bench/thresholds.py [--target 0.97]

Both are picked as the starter build picks them: on calibrated out-of-fold predictions of train/ (5 folds by
content hash), per category where at least 20 train photos were predicted as it, else the global one. They are
then applied once to validation/, which picked nothing. For reference it also prints each rule picked on
validation itself (an upper bound no shop can reach: it knows the answers). Data sets: $VITRINE_DATASETS_DIR,
else ../shared/datasets.
"""

import argparse
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from bench.common import datasets_dir  # noqa: E402
from bench.starter_features import starter_features  # noqa: E402
from classifier.ml.calibration import apply_temperature, fit_calibration  # noqa: E402
from classifier.ml.evaluate import auto_filing_threshold, class_thresholds  # noqa: E402
from classifier.ml.machine import machine_line  # noqa: E402
from classifier.ml.starter.build import fit_linear_head, head_probabilities, out_of_fold  # noqa: E402


def filed(probabilities: np.ndarray, y: np.ndarray, cuts: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Coverage, precision and the filed mask at per-class cuts (index: predicted class)."""
    predicted = probabilities.argmax(axis=1)
    mask = probabilities.max(axis=1) >= cuts[predicted]
    correct = predicted == y
    return float(mask.mean()), float(correct[mask].mean()) if mask.any() else 1.0, mask


def per_class_cuts(probabilities: np.ndarray, y: np.ndarray, names: list[str], *, target: float) -> tuple:
    one = auto_filing_threshold(probabilities=probabilities, y=y, target_precision=target)[
        "suggested_threshold"
    ]
    picked = class_thresholds(
        probabilities=probabilities, y=y, class_names=names, global_threshold=one, target_precision=target
    )["class_thresholds"]
    return one, np.array([picked[name]["threshold"] for name in names]), picked


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--target", type=float, default=0.97, help="precision to reach (default 0.97)")
    args = parser.parse_args()
    print(machine_line())
    data = starter_features(datasets_dir())
    names, l2 = data.class_names, data.setting["l2"]
    oof = out_of_fold(data.x_train, data.y_train, data.folds, num_classes=len(names), l2=l2)
    temperature = fit_calibration(probabilities=oof, y=data.y_train, fitted_on="out-of-fold")["temperature"]
    oof = apply_temperature(oof, temperature=temperature)
    weights, bias = fit_linear_head(data.x_train, data.y_train, num_classes=len(names), l2=l2)
    val = apply_temperature(
        head_probabilities(data.x_val, weights=weights, bias=bias), temperature=temperature
    )
    print(
        f"clothing-small: {len(data.y_train)} train photos pick, {len(data.y_val)} validation photos score; "
        f"starter setting {data.setting}, temperature {temperature:.3f}; target precision {args.target:.0%}"
    )

    one, cuts, picked = per_class_cuts(oof, data.y_train, names, target=args.target)
    single = filed(val, data.y_val, np.full(len(names), one))
    per_class = filed(val, data.y_val, cuts)

    def line(rule: str, threshold: str, result: tuple) -> None:
        print(f"{rule:<44} {threshold:>14} {result[0]:>9.1%} {result[1]:>10.1%}")

    print(f"\n{'rule':<44} {'threshold(s)':>14} {'coverage':>9} {'precision':>10}")
    line("one threshold (picked out-of-fold on train)", f"{one:.3f}", single)
    line("per category (picked out-of-fold on train)", "see below", per_class)
    val_one, val_cuts, _ = per_class_cuts(val, data.y_val, names, target=args.target)
    line(
        "one threshold (picked on validation itself)",
        f"{val_one:.3f}",
        filed(val, data.y_val, np.full(len(names), val_one)),
    )
    line("per category (picked on validation itself)", "", filed(val, data.y_val, val_cuts))

    predicted = val.argmax(axis=1)
    correct = predicted == data.y_val
    headers = ("own", "threshold", "val predicted", "filed one", "precision one", "filed own")
    headers += ("precision own",)
    print(f"\n{'category':<12} " + " ".join(f"{header:>13}" for header in headers))
    for index, name in enumerate(names):
        mine = predicted == index
        at_one = mine & single[2]
        at_own = mine & per_class[2]
        cells = ("yes" if picked[name]["own"] else "no", f"{cuts[index]:.3f}", int(mine.sum()))
        for at in (at_one, at_own):
            cells += (int(at.sum()), f"{correct[at].mean():.1%}" if at.any() else "-")
        print(f"{name:<12} " + " ".join(f"{cell:>13}" for cell in cells))
    gain = per_class[0] - single[0]
    print(
        f"\nper category files {gain * 100:+.1f} pp of validation at {per_class[1]:.1%} precision "
        f"(one threshold: {single[1]:.1%})"
    )


if __name__ == "__main__":
    main()
