"""clothing-small's photos as the starter head reads them: the backbone's features at the starter's chosen
setting (starter.json), computed once and cached by the starter build's feature cache (var/cache/
starter-features; a first run takes minutes, later ones seconds)."""

import json
import pathlib
from dataclasses import dataclass

import numpy as np

from bench.common import REPO
from classifier.ml.starter import SUMMARY_FILE
from classifier.ml.starter.build import SEED, fold_of, photo_features, served_features
from classifier.ml.starter.data import load_starter_data

STARTER_DIR = REPO / "classifier" / "ml" / "starter"
CACHE_DIR = REPO / "var" / "cache" / "starter-features"


@dataclass(frozen=True)
class StarterFeatures:
    class_names: list[str]
    setting: dict  # starter.json's chosen side, mirror, transform and l2
    x_train: np.ndarray
    y_train: np.ndarray
    folds: np.ndarray  # each train photo's fold, as the build assigns it
    x_val: np.ndarray
    y_val: np.ndarray
    fingerprint: str


def starter_features(datasets_dir: pathlib.Path, *, cache_dir: pathlib.Path = CACHE_DIR) -> StarterFeatures:
    setting = json.loads((STARTER_DIR / SUMMARY_FILE).read_text())["selection"]["chosen"]
    data = load_starter_data(datasets_dir)
    views = {}
    for split, photos in (("train", data.train), ("validation", data.validation)):
        views[split], _ = photo_features(photos, side=setting["side"], cache_dir=cache_dir, report=print)
    return StarterFeatures(
        class_names=data.class_names,
        setting=setting,
        x_train=served_features(views["train"], mirror=setting["mirror"], transform=setting["transform"]),
        y_train=np.array([photo.label for photo in data.train]),
        folds=np.array([fold_of(photo, seed=SEED) for photo in data.train]),
        x_val=served_features(views["validation"], mirror=setting["mirror"], transform=setting["transform"]),
        y_val=np.array([photo.label for photo in data.validation]),
        fingerprint=data.fingerprint,
    )
