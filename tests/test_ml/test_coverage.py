"""The colors a style was taught (``metrics.coverage``) and the share of a photo outside them."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from app.ml import learn_style
from app.ml.coverage import GRID, ColorCoverage, color_cells


def _ramp(lo: float, hi: float, channel: int, size: int = 64) -> np.ndarray:
    """A smooth image whose colors lie in a band of ``channel`` (others at 0.1)."""
    img = np.full((size, size, 3), 0.1)
    img[..., channel] = np.linspace(lo, hi, size)[None, :]
    return img


def test_cells_follow_the_lattice_and_the_top_value_stays_in_the_last_cell() -> None:
    values = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1 / 16 - 1e-9, 1 / 16, 0.5]])
    cells = color_cells(values)
    assert cells[0] == 0
    assert cells[1] == (15 * GRID + 15) * GRID + 15  # 1.0 belongs to the last of 16 cells
    assert cells[2] == (0 * GRID + 1) * GRID + 8
    # uint8 and uint16 pixels land where their float values do
    u8 = np.array([[0, 16, 255]], np.uint8)
    assert (
        color_cells(u8)[0]
        == color_cells(u8 / 255.0)[0]
        == color_cells(u8.astype(np.uint16) * 257)[0]
    )


def test_a_learned_style_records_its_training_colors() -> None:
    """Learned from red ramps, the style reports none of another red ramp in the same band as
    unseen, all of a green one, and half of a photo that is half each."""
    rng = np.random.default_rng(3)
    pairs = []
    for _ in range(2):
        before = np.clip(_ramp(0.2, 0.9, 0) + rng.normal(0, 0.002, (64, 64, 3)), 0, 1)
        pairs.append((before.astype(np.float32), (before**0.8).astype(np.float32)))
    result = learn_style("dlut", pairs, time_budget_s=20)
    record = result.metrics["coverage"]
    assert record["grid"] == GRID
    coverage = ColorCoverage.from_dict(record)
    assert coverage.seen.sum() == record["seen_cells"] > 0
    red, green = _ramp(0.25, 0.85, 0), _ramp(0.25, 0.85, 1)
    assert coverage.unseen_share(red) == 0.0
    assert coverage.unseen_share(green) == 1.0
    assert coverage.unseen_share(np.concatenate([red, green], axis=1)) == 0.5


def test_references_only_styles_record_no_coverage() -> None:
    """A color transfer learns no before -> after mapping, so there is nothing to record."""
    refs = [(_ramp(0.2, 0.9, 0) * 255).astype(np.uint8)]
    assert "coverage" not in learn_style("dlut", references=refs, time_budget_s=10).metrics


@pytest.mark.parametrize(
    "record",
    [
        {},
        {"grid": 17},
        {"grid": "x", "cells": ""},
        {"grid": 17, "cells": "not base64!"},
        {"grid": 17, "cells": base64.b64encode(b"\x00" * 10).decode()},  # wrong length
        {"grid": 1000, "cells": ""},
    ],
)
def test_a_malformed_record_is_refused(record: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="not a color coverage record"):
        ColorCoverage.from_dict(record)


def test_a_large_photo_is_sampled_evenly() -> None:
    """Past SAMPLE_PIXELS the share comes from evenly spaced pixels: a photo whose left half is
    unseen still reads about half."""
    coverage = ColorCoverage.from_images([_ramp(0.2, 0.9, 0)])
    big = np.full((700, 800, 3), 0.1)
    big[..., 0] = 0.5
    big[:, :400, 1] = 0.9  # unseen: much green
    assert 0.49 <= coverage.unseen_share(big) <= 0.51
