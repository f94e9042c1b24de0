import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("MURAUER_SHARED", REPO.parent / "shared"))
NYU_FILES = SHARED / "data" / "nyu"


@pytest.fixture(scope="session")
def nyu_files() -> Path:
    if not (NYU_FILES / "nyu_test_groundtruth_label.txt").is_file():
        pytest.skip(f"real NYU test files not found at {NYU_FILES} (set MURAUER_SHARED)")
    return NYU_FILES


@pytest.fixture(scope="session")
def nyu_gt_uvd(nyu_files) -> np.ndarray:
    """Ground truth of all 8252 NYU test frames, (8252, 14, 3) uvd."""
    return np.loadtxt(nyu_files / "nyu_test_groundtruth_label.txt").reshape(-1, 14, 3)
