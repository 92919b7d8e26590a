"""The starter model: a small head on the frozen EfficientNet-Lite2 backbone, kept in the repository.

A fresh install files real product photos with it before the shop has trained anything. `head.npz` holds the
head's weights and the out-of-distribution statistics, `starter.json` how they were made and what they scored
(data fingerprint, licence, backbone, seed, metrics on clothing-small/validation). Both are rebuilt by

    python -m classifier.ml.starter build --datasets-dir ../shared/datasets

(classifier.ml.starter.build), and classifier.ml.starter.assemble.assemble_starter_artifact turns them into
a normal model artifact in seconds, with no data set and no training. This module imports no TensorFlow.
"""

import json
import pathlib

STARTER_DIR = pathlib.Path(__file__).resolve().parent
HEAD_FILE = "head.npz"
SUMMARY_FILE = "starter.json"
BACKBONE_VARIANT = "lite2"
ARCHITECTURE = "starter_effnet_lite2"


class StarterError(RuntimeError):
    """The starter model cannot be built or assembled here; the message says why in one line."""


class StarterUnavailable(StarterError):
    """The starter cannot be assembled on this install (backbone wheel missing or different, head files
    missing or damaged): the caller falls back to another default model."""


def read_starter_summary(starter_dir: pathlib.Path | None = None) -> dict:
    """starter.json: how the starter head was built and what it scored (StarterUnavailable when absent)."""
    path = pathlib.Path(starter_dir or STARTER_DIR) / SUMMARY_FILE
    try:
        summary = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise StarterUnavailable(f"{path}: cannot read the starter summary ({error})") from error
    if not isinstance(summary, dict):
        raise StarterUnavailable(f"{path}: not a starter summary (expected a JSON object)")
    return summary
