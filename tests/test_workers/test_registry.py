"""The worker's model registry finds the published weights: the packaged copy by default, the
``PUBLISHED_WEIGHTS_DIR`` setting's folder when set (never ``../shared``)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from app.config import Settings
from app.ml import weights
from app.workers.registry import load_model_registry, published_weights_dir


def test_default_is_the_packaged_copy() -> None:
    settings = Settings(published_weights_dir=None)
    assert published_weights_dir(settings) == weights.PACKAGED
    registry = load_model_registry(settings)
    assert registry["adaptive_3dlut_init"] == str(weights.PACKAGED / "adaptive_3dlut")
    assert registry["nilut_published"] == str(weights.PACKAGED / "nilut" / "nilutx3style.pt")


def test_setting_points_elsewhere(tmp_path: Path) -> None:
    shutil.copytree(weights.PACKAGED / "adaptive_3dlut", tmp_path / "adaptive_3dlut")
    registry = load_model_registry(Settings(published_weights_dir=tmp_path))
    assert registry["adaptive_3dlut_init"] == str(tmp_path / "adaptive_3dlut")
    assert "nilut_published" not in registry


def test_a_folder_without_weights_starts_from_scratch_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="picfilter.worker"):
        registry = load_model_registry(Settings(published_weights_dir=tmp_path))
    assert "adaptive_3dlut_init" not in registry
    assert "learning starts from scratch" in caplog.text
