"""Reading a PyTorch checkpoint (.pth state dict) into numpy arrays, without torch.

A .pth is a pickle whose tensors point at raw storages kept beside it: in a zip archive (data.pkl and
data/<key>, torch >= 1.6) or, in the legacy format, as a run of pickles followed by the storages' bytes.
Pickles can run arbitrary code, so the reader allows only the few globals a state dict needs and refuses
everything else.
"""

import collections
import io
import os
import pathlib
import pickle
import zipfile
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

# The legacy format opens with this number (torch.serialization.MAGIC_NUMBER) and protocol version.
LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001
STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class CheckpointError(ValueError):
    """A file that is not a readable PyTorch state dict, or that asks to run code we do not allow."""


@dataclass(frozen=True)
class _Storage:
    key: str
    dtype: np.dtype
    numel: int


@dataclass(frozen=True)
class _TensorView:
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]


def _rebuild_tensor(
    storage: _Storage,
    storage_offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    *unused: object,
) -> _TensorView:
    # Stands in for torch._utils._rebuild_tensor_v2; requires_grad, hooks and metadata mean nothing here.
    return _TensorView(storage=storage, offset=int(storage_offset), shape=tuple(size), strides=tuple(stride))


class _StateDictUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, *, name: str) -> None:
        super().__init__(file)
        self._name = name

    def find_class(self, module: str, name: str) -> object:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in STORAGE_DTYPES:
            return STORAGE_DTYPES[name]
        raise CheckpointError(
            f"{self._name}: refuses to load {module}.{name} (only tensors and dicts allowed)"
        )

    def persistent_load(self, saved_id: object) -> _Storage:
        if not (isinstance(saved_id, tuple) and len(saved_id) >= 5 and saved_id[0] == "storage"):
            raise CheckpointError(f"{self._name}: unknown persistent reference {saved_id!r:.80}")
        _, dtype, key, _location, numel, *view = saved_id
        if not isinstance(dtype, np.dtype):
            raise CheckpointError(f"{self._name}: storage {key} has no known element type")
        if view and view[0] is not None:
            raise CheckpointError(f"{self._name}: storage views (legacy format) are not supported")
        return _Storage(key=str(key), dtype=dtype, numel=int(numel))


def _unpickle(file: BinaryIO, *, name: str) -> object:
    try:
        return _StateDictUnpickler(file, name=name).load()
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
        raise CheckpointError(f"{name}: not a PyTorch checkpoint ({error})") from None


def _tensor(view: _TensorView, *, buffer: np.ndarray, name: str, key: str) -> np.ndarray:
    if any(size < 0 for size in view.shape) or any(stride < 0 for stride in view.strides):
        raise CheckpointError(f"{name}: tensor {key} has a negative size or stride")
    last = view.offset + sum(
        (size - 1) * stride for size, stride in zip(view.shape, view.strides, strict=True)
    )
    if 0 not in view.shape and (view.offset < 0 or last >= len(buffer)):
        raise CheckpointError(f"{name}: tensor {key} reaches past its storage")
    strides_in_bytes = tuple(stride * buffer.itemsize for stride in view.strides)
    return np.lib.stride_tricks.as_strided(
        buffer[view.offset :], shape=view.shape, strides=strides_in_bytes, writeable=False
    ).copy()


def _materialise(state: object, *, storages: dict[str, np.ndarray], name: str) -> dict[str, np.ndarray]:
    if not isinstance(state, dict):
        raise CheckpointError(f"{name}: holds a {type(state).__name__}, not a state dict")
    arrays = {}
    for key, value in state.items():
        if not isinstance(value, _TensorView):
            raise CheckpointError(f"{name}: entry {key!r} is not a tensor")
        arrays[str(key)] = _tensor(value, buffer=storages[value.storage.key], name=name, key=str(key))
    return arrays


def _storages_used(state: dict) -> dict[str, _Storage]:
    return {value.storage.key: value.storage for value in state.values() if isinstance(value, _TensorView)}


def _read_zip(path: pathlib.Path) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as archive:
        pickles = [
            entry for entry in archive.namelist() if entry.endswith("/data.pkl") or entry == "data.pkl"
        ]
        if len(pickles) != 1:
            raise CheckpointError(f"{path}: a zip without one data.pkl is not a PyTorch checkpoint")
        prefix = pickles[0][: -len("data.pkl")]
        state = _unpickle(io.BytesIO(archive.read(pickles[0])), name=str(path))
        if not isinstance(state, dict):
            raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a state dict")
        storages = {}
        for key, storage in _storages_used(state).items():
            try:
                raw = archive.read(f"{prefix}data/{key}")
            except KeyError:
                raise CheckpointError(f"{path}: storage {key} is missing from the archive") from None
            storages[key] = np.frombuffer(raw, dtype=storage.dtype, count=len(raw) // storage.dtype.itemsize)
    return _materialise(state, storages=storages, name=str(path))


def _read_legacy(path: pathlib.Path) -> dict[str, np.ndarray]:
    name = str(path)
    with path.open("rb") as file:
        if _unpickle(file, name=name) != LEGACY_MAGIC_NUMBER:
            raise CheckpointError(f"{path}: not a PyTorch checkpoint (no magic number)")
        if _unpickle(file, name=name) != LEGACY_PROTOCOL_VERSION:
            raise CheckpointError(f"{path}: unsupported legacy checkpoint protocol")
        system = _unpickle(file, name=name)
        if not (isinstance(system, dict) and system.get("little_endian", True)):
            raise CheckpointError(f"{path}: written on a big-endian machine; not supported")
        state = _unpickle(file, name=name)
        if not isinstance(state, dict):
            raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a state dict")
        used = _storages_used(state)
        keys = _unpickle(file, name=name)
        if not isinstance(keys, list):
            raise CheckpointError(f"{path}: storage list is missing")
        storages = {}
        for key in keys:
            if key not in used:
                raise CheckpointError(f"{path}: storage {key} is not used by any tensor")
            dtype = used[key].dtype
            # Each storage: its element count as a little-endian int64, then the raw elements.
            header = file.read(8)
            numel = int(np.frombuffer(header, dtype="<i8")[0]) if len(header) == 8 else -1
            raw = file.read(numel * dtype.itemsize) if numel >= 0 else b""
            if numel < 0 or len(raw) != numel * dtype.itemsize:
                raise CheckpointError(f"{path}: truncated (storage {key} is incomplete)")
            storages[key] = np.frombuffer(raw, dtype=dtype)
        missing = set(used) - set(storages)
        if missing:
            raise CheckpointError(f"{path}: storages missing: {', '.join(sorted(missing))}")
    return _materialise(state, storages=storages, name=name)


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The named tensors of a PyTorch state dict file, as numpy arrays in PyTorch's own layout."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if zipfile.is_zipfile(path):
        return _read_zip(path)
    return _read_legacy(path)
