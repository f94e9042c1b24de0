import gzip
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
# Real NYU files shipped with the package (origins and licence: murauer_dist/frames/nyu_reference/SOURCES.md).
NYU_FILES = REPO / "murauer_dist" / "frames" / "nyu_reference"
NYU_GT = "nyu_test_groundtruth_label.txt.gz"
NYU_FRAME = "test/depth_1_0000001.png"
MURAUER_RESULT = "results/murauer_n72757_uvd.txt.gz"


def read_text(path: Path) -> str:
    """A text file's content; .gz files are decompressed."""
    if Path(path).suffix == ".gz":
        with gzip.open(path, "rt") as handle:
            return handle.read()
    return Path(path).read_text()


@pytest.fixture(scope="session")
def nyu_files() -> Path:
    missing = [name for name in (NYU_GT, NYU_FRAME, MURAUER_RESULT) if not (NYU_FILES / name).is_file()]
    if missing:
        pytest.fail(f"real NYU test files missing from {NYU_FILES}: {', '.join(missing)} (they are part of the repository)")
    return NYU_FILES


@pytest.fixture(scope="session")
def nyu_gt_uvd(nyu_files) -> np.ndarray:
    """Ground truth of all 8252 NYU test frames, (8252, 14, 3) uvd."""
    return np.loadtxt(nyu_files / NYU_GT).reshape(-1, 14, 3)
