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
