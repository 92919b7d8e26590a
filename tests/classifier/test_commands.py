import io
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command
from PIL import Image

from classifier.ml.artifact import METADATA_FILE, MODEL_FILE
from classifier.ml.preprocess import open_image
from classifier.ml.serving import Classifier
from tests.classifier.ml.conftest import SHAPE_CLASSES, write_shape_photos

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIDENCE = r"\d{1,3}\.\d%"
# "<path>: label 97.1%, label 1.2%, label 0.5%" or "<path>: not detected (label 60.2%, ...)"
PREDICTION_LINE = re.compile(
    rf"^(?P<path>.+?): (?P<verdict>not detected \()?(?P<top>.+? {CONFIDENCE}(, .+? {CONFIDENCE})*)\)?$"
)


def run(command: str, *args: str) -> tuple[str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    call_command(command, *args, stdout=stdout, stderr=stderr)
    return stdout.getvalue(), stderr.getvalue()


@pytest.fixture(scope="module")
def shapes_folder(tmp_path_factory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("commands") / "shapes"
    for index, shape in enumerate(SHAPE_CLASSES):
        write_shape_photos(root / shape, shape=shape, count=12, seed=index)
    return root


@pytest.fixture(scope="module")
def trained(shapes_folder, tmp_path_factory) -> tuple[pathlib.Path, str]:
    """(artifact directory, the train command's stdout) for a 2-epoch seed_dense on the shapes folder."""
    out_dir = tmp_path_factory.mktemp("models") / "shapes"
    stdout, _ = run(
        "train",
        f"--dataset={shapes_folder}",
        "--arch=seed_dense",
        "--epochs=2",
        "--image-size=32",
        f"--out={out_dir}",
    )
    return out_dir, stdout


@pytest.fixture
def photos(tmp_path) -> list[pathlib.Path]:
    """Two new photos of each shape, never seen in training."""
    return [
        path
        for index, shape in enumerate(SHAPE_CLASSES)
        for path in write_shape_photos(tmp_path / "new", shape=shape, count=2, seed=50 + index)
    ]


def test_train_prints_one_line_per_epoch_then_test_accuracy_and_the_artifact(trained):
    out_dir, stdout = trained

    lines = stdout.splitlines()
    epoch_lines = [line for line in lines if line.startswith("epoch ")]
    assert [line.split()[1] for line in epoch_lines] == ["1/2", "2/2"]
    assert all(
        re.search(r"loss \d\.\d{4}  acc \d\.\d{4}  val_loss .*  eta \S+$", line) for line in epoch_lines
    )
    assert re.search(r"^test accuracy \d\.\d{4} \(\d+ images, \d+s\)$", stdout, re.MULTILINE)
    assert lines[-1] == f"artifact: {out_dir}"
    assert (out_dir / MODEL_FILE).is_file()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--dataset=/no/such/folder"], "no such data set or folder: /no/such/folder"),
        (["--arch=resnet"], "unknown architecture 'resnet'"),
        (["--val-fraction=1.5"], "--val-fraction must be in"),
        (["--epochs=0"], "epochs must be at least 1"),
    ],
)
def test_train_refuses_bad_input_with_one_line(arguments, message, shapes_folder, tmp_path):
    with pytest.raises(CommandError, match=re.escape(message)):
        run(
            "train",
            f"--dataset={shapes_folder}",
            f"--out={tmp_path / 'model'}",
            "--image-size=32",
            *arguments,
        )
    assert not (tmp_path / "model").exists()


def test_train_refuses_a_folder_with_one_class(shapes_folder, tmp_path):
    write_shape_photos(tmp_path / "one" / "circle", shape="circle", count=4, seed=0)

    with pytest.raises(CommandError, match="only one class"):
        run("train", f"--dataset={tmp_path / 'one'}", f"--out={tmp_path / 'model'}")


def test_train_refuses_to_overwrite_an_artifact(trained, shapes_folder):
    out_dir, _ = trained

    with pytest.raises(CommandError, match="not an empty directory"):
        run("train", f"--dataset={shapes_folder}", f"--out={out_dir}", "--image-size=32", "--arch=seed_dense")


def test_classify_prints_the_top_three_categories_per_image(trained, photos):
    out_dir, _ = trained

    stdout, stderr = run("classify", *map(str, photos), f"--model={out_dir}", "--threshold=0.01")

    lines = stdout.splitlines()
    assert [PREDICTION_LINE.match(line)["path"] for line in lines] == [str(path) for path in photos]
    for line in lines:
        top = PREDICTION_LINE.match(line)["top"].split(", ")
        assert len(top) == 3
        assert {entry.rsplit(" ", 1)[0] for entry in top} <= set(SHAPE_CLASSES)
    assert "not detected" not in stdout
    assert stderr == ""


@pytest.fixture
def confidences(trained, photos) -> dict[str, float]:
    """Image path -> the model's top confidence, computed by the serving code the command uses."""
    out_dir, _ = trained
    predictions = Classifier.load(out_dir).predict_images([open_image(path) for path in photos])
    return {str(path): prediction.confidence for path, prediction in zip(photos, predictions, strict=True)}


@pytest.mark.parametrize("threshold", ["median", "default"])
def test_classify_says_not_detected_exactly_under_the_threshold(trained, photos, confidences, threshold):
    out_dir, _ = trained
    if threshold == "median":
        value = sorted(confidences.values())[len(confidences) // 2]
        options = [f"--threshold={value!r}"]
    else:
        value, options = 0.95, []

    stdout, _ = run("classify", *map(str, photos), f"--model={out_dir}", *options)

    verdicts = {
        match["path"]: bool(match["verdict"]) for match in map(PREDICTION_LINE.match, stdout.splitlines())
    }
    assert verdicts == {path: confidence < value for path, confidence in confidences.items()}
    if threshold == "median":
        assert set(verdicts.values()) == {True, False}


def test_classify_top_option_limits_the_list(trained, photos):
    out_dir, _ = trained

    stdout, _ = run("classify", str(photos[0]), f"--model={out_dir}", "--top=1", "--threshold=0.01")

    assert re.fullmatch(rf"{re.escape(str(photos[0]))}: \w+ {CONFIDENCE}\n", stdout)


def test_classify_annotates_copies_with_label_and_confidence(trained, photos, tmp_path):
    out_dir, _ = trained
    annotated_dir = tmp_path / "annotated"

    run("classify", *map(str, photos[:2]), f"--model={out_dir}", f"--annotate={annotated_dir}")

    written = sorted(annotated_dir.iterdir())
    assert [path.name for path in written] == sorted(f"{path.stem}.annotated.jpg" for path in photos[:2])
    for path in written:
        with Image.open(path) as annotated:
            assert annotated.width >= 320
            # The caption sits on a black band across the top.
            assert annotated.convert("L").getpixel((annotated.width - 2, 1)) < 40


def test_classify_reports_bad_files_and_still_classifies_the_rest(trained, photos, bad_files):
    out_dir, _ = trained
    stdout, stderr = io.StringIO(), io.StringIO()

    with pytest.raises(CommandError, match="2 of 4 files could not be classified"):
        call_command(
            "classify",
            str(photos[0]),
            str(bad_files / "notes.jpg"),
            str(bad_files / "missing.jpg"),
            str(photos[1]),
            f"--model={out_dir}",
            stdout=stdout,
            stderr=stderr,
        )

    assert [PREDICTION_LINE.match(line)["path"] for line in stdout.getvalue().splitlines()] == [
        str(photos[0]),
        str(photos[1]),
    ]
    assert "notes.jpg: not an image" in stderr.getvalue()
    assert "missing.jpg: no such file" in stderr.getvalue()


@pytest.fixture
def bad_files(tmp_path) -> pathlib.Path:
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "notes.jpg").write_text("size chart: S M L\n")
    return folder


def test_classify_refuses_a_missing_model(photos, tmp_path):
    with pytest.raises(CommandError, match="no such model directory"):
        run("classify", str(photos[0]), f"--model={tmp_path / 'nothing'}")


def test_classify_refuses_a_tampered_model(trained, photos, tmp_path):
    out_dir, _ = trained
    copy = tmp_path / "tampered"
    copy.mkdir()
    (copy / METADATA_FILE).write_bytes((out_dir / METADATA_FILE).read_bytes())
    (copy / MODEL_FILE).write_bytes((out_dir / MODEL_FILE).read_bytes() + b"\0")

    with pytest.raises(CommandError, match="checksum does not match"):
        run("classify", str(photos[0]), f"--model={copy}")


def test_classify_refuses_an_artifact_whose_categories_do_not_match_its_model(trained, photos, tmp_path):
    out_dir, _ = trained
    copy = tmp_path / "other-categories"
    copy.mkdir()
    metadata = json.loads((out_dir / METADATA_FILE).read_text())
    metadata["class_names"] = [f"category-{index}" for index in range(10)]
    (copy / METADATA_FILE).write_text(json.dumps(metadata))
    (copy / MODEL_FILE).write_bytes((out_dir / MODEL_FILE).read_bytes())

    with pytest.raises(CommandError, match="model predicts 3 classes but metadata names 10"):
        run("classify", str(photos[0]), f"--model={copy}")


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("--threshold=1.5", r"--threshold must be above 0 and at most 1 \(a confidence\), not 1.5"),
        ("--threshold=0", r"--threshold must be above 0 and at most 1 \(a confidence\), not 0.0"),
        ("--top=0", "--top must be at least 1"),
    ],
)
def test_classify_refuses_bad_options(trained, photos, option, message):
    out_dir, _ = trained

    with pytest.raises(CommandError, match=message):
        run("classify", str(photos[0]), f"--model={out_dir}", option)


def test_a_bad_file_exits_non_zero_with_one_line_and_no_traceback(trained, bad_files):
    out_dir, _ = trained

    completed = subprocess.run(
        [sys.executable, "manage.py", "classify", str(bad_files / "notes.jpg"), f"--model={out_dir}"],
        cwd=REPO_ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert completed.returncode == 1
    assert "Traceback" not in completed.stderr
    assert completed.stderr.rstrip().splitlines()[-1] == "CommandError: 1 of 1 files could not be classified"
    assert f"error: {bad_files / 'notes.jpg'}: not an image" in completed.stderr


def test_seed_experiments_print_the_table_of_variants(fashion_mnist_available, tmp_path):
    stdout, _ = run("seed_experiments", "--epochs=1", "--subset=60", "--lenet", f"--out={tmp_path / 'seed'}")

    table = stdout.split("variant", 1)[1].splitlines()
    rows = [line.split() for line in table[2:6]]
    assert [row[0] for row in rows] == [
        "seed_dense",
        "seed_dense_plus128",
        "seed_dense_plus128_64",
        "seed_lenet",
    ]
    assert [row[1] for row in rows] == ["203,530", "235,146", "242,762", "1,256,080"]
    assert all(row[2] == "1" and 0.0 <= float(row[4]) <= 1.0 for row in rows)
    assert sorted(path.name for path in (tmp_path / "seed").iterdir()) == sorted(row[0] for row in rows)


def test_seed_experiments_refuse_to_overwrite(tmp_path):
    (tmp_path / "seed" / "seed_dense").mkdir(parents=True)

    with pytest.raises(CommandError, match="already holds seed_dense"):
        run("seed_experiments", f"--out={tmp_path / 'seed'}")


@pytest.fixture
def fashion_mnist_available(settings) -> None:
    if not (pathlib.Path(settings.VITRINE_DATASETS_DIR) / "fashion-mnist").is_dir():
        pytest.skip("Fashion-MNIST IDX files not found (set VITRINE_DATASETS_DIR)")
