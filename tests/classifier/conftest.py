"""Fixtures of the classifier's tests."""

import pathlib

import pytest

from classifier.models import ModelVersion
from classifier.services.model_versions import model_version_register


@pytest.fixture
def active_model_version(tiny_model: pathlib.Path) -> ModelVersion:
    """The tiny model registered and active: what workers serve."""
    return model_version_register(artifact_dir=tiny_model, activate=True)
