"""What the bench scripts share: where the data sets are."""

import os
import pathlib

REPO = pathlib.Path(__file__).resolve().parent.parent


def datasets_dir() -> pathlib.Path:
    """$VITRINE_DATASETS_DIR, else shared/datasets beside the repository (as the Django settings say)."""
    return pathlib.Path(os.environ.get("VITRINE_DATASETS_DIR") or REPO.parent / "shared" / "datasets")
