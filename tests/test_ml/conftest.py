from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import SHARED, make_photo, missing_shared, quantize, reference_trilinear

__all__ = ["make_photo", "quantize", "reference_trilinear"]  # the ML tests import them from here


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; absent, the tests that need it skip (fail under ``CI=true``)."""
    if not SHARED.is_dir():
        missing_shared(f"shared data folder {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def trilinear_ref() -> Callable[..., np.ndarray]:
    return reference_trilinear


@pytest.fixture(scope="session")
def photo() -> Callable[..., np.ndarray]:
    return make_photo
