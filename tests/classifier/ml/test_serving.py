import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from classifier.ml.artifact import ArtifactError
from classifier.ml.datasets import Dataset
from classifier.ml.preprocess import prepare_batch
from classifier.ml.serving import SERVING_CHUNK, Classifier, configure_tensorflow
from classifier.ml.train import train

REPO_ROOT = pathlib.Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def fashion_model(tiny_fashion: Dataset, tmp_path_factory) -> pathlib.Path:
    """A seed_dense artifact trained 3 epochs on 300 Fashion-MNIST images."""
    out_dir = tmp_path_factory.mktemp("serving") / "fashion-dense"
    return train(dataset=tiny_fashion, arch="seed_dense", epochs=3, out_dir=out_dir).artifact_dir


@pytest.fixture(scope="module")
def classifier(fashion_model: pathlib.Path) -> Classifier:
    return Classifier.load(fashion_model)


def test_loaded_classifier_knows_its_categories_and_preprocessing(classifier, tiny_fashion):
    assert classifier.class_names == tiny_fashion.class_names
    assert classifier.input_shape == (28, 28, 1)
    assert classifier.style == "fashion-mnist"
    assert classifier.metadata["architecture"] == "seed_dense"


def test_serving_recognises_the_test_images_as_well_as_training_measured(classifier, tiny_fashion):
    predictions = classifier.predict_arrays(tiny_fashion.x_test)

    labels = np.array([classifier.class_names.index(prediction.label) for prediction in predictions])
    accuracy = float((labels == tiny_fashion.y_test).mean())
    assert accuracy == pytest.approx(classifier.metadata["metrics"]["test_accuracy"], abs=1e-9)
    assert accuracy > 0.5  # chance is 0.1


def test_predictions_list_the_top_categories_best_first(classifier, tiny_fashion):
    prediction = classifier.predict_arrays(tiny_fashion.x_test[:1], top_k=4)[0]

    confidences = [confidence for _, confidence in prediction.top]
    assert len(prediction.top) == 4
    assert confidences == sorted(confidences, reverse=True)
    assert (prediction.label, prediction.confidence) == prediction.top[0]
    assert 0.0 < sum(confidences) <= 1.0 + 1e-6
    assert len({label for label, _ in prediction.top}) == 4


def test_asking_for_more_categories_than_exist_lists_them_all(classifier, tiny_fashion):
    prediction = classifier.predict_arrays(tiny_fashion.x_test[:1], top_k=50)[0]

    assert sorted(label for label, _ in prediction.top) == sorted(classifier.class_names)
    assert sum(confidence for _, confidence in prediction.top) == pytest.approx(1.0, abs=1e-5)


def test_batches_larger_than_a_chunk_match_one_by_one_predictions(classifier, tiny_fashion):
    pixels = tiny_fashion.x_test[: 2 * SERVING_CHUNK + 5]

    together = classifier.predict_arrays(pixels)
    alone = [classifier.predict_arrays(pixels[index : index + 1])[0] for index in range(0, len(pixels), 13)]

    assert len(together) == len(pixels)
    for index, prediction in zip(range(0, len(pixels), 13), alone, strict=True):
        assert together[index].label == prediction.label
        assert together[index].confidence == pytest.approx(prediction.confidence, abs=1e-5)


def test_photos_go_through_the_shared_preprocessing(classifier):
    rng = np.random.default_rng(3)
    photos = [
        Image.fromarray(rng.integers(0, 256, (height, 90, 3), dtype=np.uint8)) for height in (60, 120, 200)
    ]

    from_photos = classifier.predict_images(photos)
    from_arrays = classifier.predict_arrays(
        prepare_batch(photos, input_shape=(28, 28, 1), style="fashion-mnist")
    )

    assert [prediction.top for prediction in from_photos] == [prediction.top for prediction in from_arrays]


def test_no_photos_give_no_predictions(classifier):
    assert classifier.predict_images([]) == []


def test_pixels_of_the_wrong_shape_are_refused(classifier):
    with pytest.raises(ValueError, match=r"expected pixels of shape \(N, 28, 28, 1\)"):
        classifier.predict_arrays(np.zeros((2, 32, 32, 3), dtype=np.uint8))


def test_loading_for_another_category_count_is_refused(fashion_model):
    with pytest.raises(ArtifactError, match="artifact has 10 classes, expected 6"):
        Classifier.load(fashion_model, expected_num_classes=6)


def test_configure_tensorflow_reports_the_device_after_tensorflow_started():
    line = configure_tensorflow(threads=2)

    assert line.startswith(("CPU (2 threads", "GPU: "))


def test_configure_tensorflow_sizes_the_thread_pools_in_a_fresh_process():
    script = (
        "from classifier.ml.serving import configure_tensorflow; import tensorflow as tf; "
        "print(configure_tensorflow(threads=1)); "
        "print(tf.config.threading.get_intra_op_parallelism_threads(), "
        "tf.config.threading.get_inter_op_parallelism_threads())"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )

    line, sizes = completed.stdout.strip().splitlines()[-2:]
    assert line in ("CPU (1 thread)",) or line.startswith("GPU: ")
    assert sizes == "1 1"
