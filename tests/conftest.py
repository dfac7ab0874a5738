"""Shared test fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_SVHN = Path(__file__).resolve().parents[2] / "shared" / "data" / "svhn"


@pytest.fixture(scope="session")
def svhn_dir() -> Path:
    """The real SVHN samples in ../shared/data/svhn (present here and in CI; never copied in)."""
    assert SHARED_SVHN.is_dir(), f"missing shared SVHN data at {SHARED_SVHN}"
    return SHARED_SVHN


@pytest.fixture(scope="session")
def crops(svhn_dir: Path):
    """The real digit crops as arrays: X (N, 32, 32, 3) uint8, y (N,), source_image (N,)."""
    import numpy as np

    with np.load(svhn_dir / "crops.npz") as f:
        return {k: f[k] for k in f.files}


def subset_by_source(crops: dict, n_sources: int, skip: int = 0) -> dict:
    """The digits of `n_sources` whole photos, so source-photo splits stay meaningful."""
    import numpy as np

    unique = np.unique(crops["source_image"])[skip:skip + n_sources]
    keep = np.isin(crops["source_image"], unique)
    return {k: v[keep] for k, v in crops.items()}


@pytest.fixture(scope="session")
def small_npz(tmp_path_factory, crops) -> Path:
    """About 3,000 real digits from 1,500 photos in the project's .npz layout."""
    import numpy as np

    sub = subset_by_source(crops, 1500)
    path = tmp_path_factory.mktemp("data") / "small.npz"
    np.savez(path, X=sub["X"], y=sub["y"], source_image=sub["source_image"])
    return path
