"""Fixtures of the deployment tests: a tiny trained model (trained once per run), copies of it to damage."""

import pathlib
import shutil

import pytest

from classifier.models import ModelVersion
from classifier.services.model_versions import model_version_register
from tests.deploy.support import ModelCopy


@pytest.fixture
def registered_copy(tiny_model: pathlib.Path, tmp_path: pathlib.Path) -> ModelCopy:
    """registered_copy("v2", activate=True) -> a version whose files are a copy of its own, free to damage."""

    def register(name: str, *, activate: bool = False) -> ModelVersion:
        artifact_dir = tmp_path / "models" / name
        shutil.copytree(tiny_model, artifact_dir)
        return model_version_register(artifact_dir=artifact_dir, name=name, activate=activate)

    return register
