from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from app.ml.lut import LUT3D, LUTStyle, apply_torch, identity_table, warmup

from .conftest import quantize, reference_trilinear

ROOT = Path(__file__).resolve().parents[2]


def random_lut(size: int = 17, seed: int = 0, spread: float = 0.15) -> LUT3D:
    """A smooth-ish random look: identity plus noise, with values a little outside [0, 1]."""
    rng = np.random.default_rng(seed)
    table = identity_table(size) + rng.normal(0, spread, (size, size, size, 3)).astype(np.float32)
    return LUT3D(np.clip(table, -0.1, 1.1))


def all_codes_image() -> np.ndarray:
    """Every 8-bit value on every channel, mixed: 256 x 256 x 3 covering each code many times."""
    r, g = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    b = (r * 7 + g * 13) % 256
    return np.stack([r, g, b], -1).astype(np.uint8)


# -- identity -----------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [2, 17, 33])
def test_identity_changes_nothing_uint8(size: int) -> None:
    img = all_codes_image()
    assert np.array_equal(LUT3D.identity(size).apply(img), img)


def test_identity_changes_nothing_uint16() -> None:
    rng = np.random.default_rng(1)
    img = rng.integers(0, 65536, (64, 64, 3), dtype=np.uint16)
    img[0, :3] = [[0, 0, 0], [65535, 65535, 65535], [1, 65534, 32768]]
    out = LUT3D.identity(33).apply(img)
    assert out.dtype == np.uint16
    assert np.abs(out.astype(np.int64) - img).max() <= 1


def test_identity_changes_nothing_float32() -> None:
    img = np.random.default_rng(2).random((32, 40, 3)).astype(np.float32)
    out = LUT3D.identity(9).apply(img)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, img, atol=1e-6)


# -- agreement with the independent reference ---------------------------------------------------
def test_uint8_matches_exact_trilinear_within_one_level() -> None:
    lut = random_lut(33)
    img = all_codes_image()
    expected = quantize(reference_trilinear(lut.table, img / 255.0))
    out = lut.apply(img)
    assert np.abs(out.astype(np.int64) - expected).max() <= 1


def test_uint16_and_float_match_reference() -> None:
    lut = random_lut(17, seed=3)
    rng = np.random.default_rng(4)
    img16 = rng.integers(0, 65536, (50, 50, 3), dtype=np.uint16)
    exact = reference_trilinear(lut.table, img16 / 65535.0)
    assert np.abs(lut.apply(img16).astype(np.int64) - quantize(exact, 65535)).max() <= 1
    imgf = rng.random((50, 50, 3)).astype(np.float32)
    np.testing.assert_allclose(lut.apply(imgf), reference_trilinear(lut.table, imgf), atol=2e-6)


def test_domain_rescales_inputs_and_clamps() -> None:
    lut = LUT3D(
        random_lut(9, seed=5).table, domain_min=[-0.1, 0.0, 0.2], domain_max=[1.5, 2.0, 0.8]
    )
    x = np.random.default_rng(6).uniform(-0.3, 1.3, (1000, 3)).astype(np.float32)
    expected = reference_trilinear(lut.table, x, lut.domain_min, lut.domain_max)
    np.testing.assert_allclose(lut.apply(x), expected, atol=2e-6)
    img = all_codes_image()
    expected8 = quantize(
        reference_trilinear(lut.table, img / 255.0, lut.domain_min, lut.domain_max)
    )
    assert np.abs(lut.apply(img).astype(np.int64) - expected8).max() <= 1


def test_float_nan_and_out_of_range_do_not_crash() -> None:
    lut = random_lut(5)
    x = np.array([[np.nan, 0.5, 0.5], [-5.0, 7.0, np.inf], [0.5, -np.inf, 0.2]], np.float32)
    out = lut.apply(x)
    assert np.isfinite(out).all()


# -- strength ----------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_strength_zero_returns_input(dtype: type) -> None:
    img = (np.random.default_rng(7).random((20, 30, 3)) * (255 if dtype is np.uint8 else 1)).astype(
        dtype
    )
    if dtype is np.uint16:
        img = (np.random.default_rng(7).random((20, 30, 3)) * 65535).astype(np.uint16)
    out = random_lut(9).apply(img, strength=0.0)
    assert out.dtype == img.dtype
    assert np.array_equal(out, img)
    assert out is not img


def test_strength_blends_linearly() -> None:
    lut = random_lut(17, seed=8)
    img = all_codes_image()
    full = reference_trilinear(lut.table, img / 255.0)
    expected = quantize(img / 255.0 + 0.3 * (full - img / 255.0))
    assert np.abs(lut.apply(img, 0.3).astype(np.int64) - expected).max() <= 1
    f = img.astype(np.float32) / 255
    np.testing.assert_allclose(lut.apply(f, 0.3), f + 0.3 * (full - f), atol=2e-6)


def test_input_validation() -> None:
    lut = LUT3D.identity(3)
    with pytest.raises(ValueError, match="shape"):
        lut.apply(np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(TypeError, match="int32"):
        lut.apply(np.zeros((4, 4, 3), np.int32))
    with pytest.raises(ValueError, match="strength"):
        lut.apply(np.zeros((4, 4, 3), np.uint8), 1.5)


def test_non_contiguous_input() -> None:
    img = all_codes_image()
    view = img[::2, ::3]
    lut = random_lut(9)
    assert np.array_equal(lut.apply(view), lut.apply(np.ascontiguousarray(view)))


# -- value object ------------------------------------------------------------------------------
def test_construction_validation() -> None:
    table = identity_table(5)
    assert LUT3D(table).size == 5
    assert LUT3D(5, table).size == 5
    with pytest.raises(ValueError, match="does not match"):
        LUT3D(6, table)
    with pytest.raises(ValueError, match=r"\(N, N, N, 3\)"):
        LUT3D(np.zeros((5, 5, 4, 3)))
    with pytest.raises(ValueError, match="2..256"):
        LUT3D(np.zeros((1, 1, 1, 3)))
    with pytest.raises(ValueError, match="2..256"):
        LUT3D.identity(300)
    bad = table.copy()
    bad[1, 1, 1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        LUT3D(bad)
    with pytest.raises(ValueError, match="domain_max"):
        LUT3D(table, domain_min=[0, 0, 0], domain_max=[1, 0, 1])


def test_table_is_read_only_copy() -> None:
    table = identity_table(3)
    lut = LUT3D(table)
    table[0, 0, 0, 0] = 0.7
    assert lut.table[0, 0, 0, 0] == 0.0
    with pytest.raises(ValueError, match="read-only"):
        lut.table[0, 0, 0, 0] = 1.0


def test_cube_order_round_trip() -> None:
    lut = random_lut(5)
    rows = lut.to_cube_order()
    # red changes fastest: row 1 is (r=1, g=0, b=0), row N is (r=0, g=1, b=0)
    np.testing.assert_array_equal(rows[1], lut.table[1, 0, 0])
    np.testing.assert_array_equal(rows[5], lut.table[0, 1, 0])
    np.testing.assert_array_equal(rows[25], lut.table[0, 0, 1])
    assert LUT3D.from_cube_order(rows, 5).allclose(lut, 0.0)


def test_resample_and_compose() -> None:
    assert LUT3D.identity(17).resample(33).allclose(LUT3D.identity(33), 1e-6)
    ident = identity_table(33)
    curve = LUT3D(ident + 0.3 * ident * (1 - ident))
    coarse = curve.resample(17)
    x = np.random.default_rng(9).random((500, 3)).astype(np.float32)
    np.testing.assert_allclose(coarse.apply(x), x + 0.3 * x * (1 - x), atol=3e-4)
    a = LUT3D(np.clip(random_lut(17, seed=10, spread=0.05).table, 0, 1))
    b = random_lut(17, seed=11, spread=0.05)
    assert a.compose(LUT3D.identity(5)).allclose(a, 1e-6)
    lattice = a.lattice_inputs()
    np.testing.assert_allclose(a.compose(b).apply(lattice), b.apply(a.apply(lattice)), atol=1e-6)


# -- torch path --------------------------------------------------------------------------------
def test_torch_path_matches_numpy_and_gradients_flow() -> None:
    import torch

    lut = random_lut(9, seed=12)
    x = np.random.default_rng(13).random((300, 3)).astype(np.float32)
    table = torch.tensor(lut.table, requires_grad=True)
    rgb = torch.tensor(x, requires_grad=True)
    out = apply_torch(table, rgb)
    np.testing.assert_allclose(out.detach().numpy(), lut.apply(x), atol=1e-5)
    out.square().sum().backward()
    assert table.grad is not None
    assert rgb.grad is not None
    assert table.grad.abs().sum() > 0
    assert torch.isfinite(rgb.grad).all()
    assert rgb.grad.abs().sum() > 0


def test_torch_batched_tables_and_domain() -> None:
    import torch

    luts = [random_lut(5, seed=s) for s in (14, 15)]
    x = np.random.default_rng(16).random((2, 40, 3)).astype(np.float32)
    out = apply_torch(torch.tensor(np.stack([lt.table for lt in luts])), torch.tensor(x))
    for k in range(2):
        np.testing.assert_allclose(out[k].numpy(), luts[k].apply(x[k]), atol=1e-5)
    dom = LUT3D(luts[0].table, domain_min=[0.1, 0, 0], domain_max=[0.9, 2, 1])
    out = apply_torch(
        torch.tensor(dom.table), torch.tensor(x[0]), domain_min=[0.1, 0, 0], domain_max=[0.9, 2, 1]
    )
    np.testing.assert_allclose(out.numpy(), dom.apply(x[0]), atol=1e-5)


# -- serving path ------------------------------------------------------------------------------
def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    import os

    full_env = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=full_env,
        check=False,
    )


def test_serving_path_does_not_import_torch() -> None:
    proc = _run(
        """
        import sys
        import numpy as np
        import app.ml.lut as lut_mod
        from app.ml.cube_export import read_cube_text, dumps_cube
        lut = read_cube_text(dumps_cube(lut_mod.LUT3D.identity(5)))
        img = np.zeros((4, 4, 3), np.uint8)
        lut.apply(img); lut.apply(img, 0.5); lut.apply(img.astype(np.float32))
        lut_mod.LUTStyle(lut).apply(img)
        print("torch" in sys.modules)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_kernels_work_without_a_writable_numba_cache() -> None:
    proc = _run(
        """
        import numba.core.caching as caching
        impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl")
        impl._locator_classes = []   # as if no cache directory were writable
        import numpy as np
        from app.ml.lut import LUT3D
        img = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
        print(bool((LUT3D.identity(9).apply(img) == img).all()))
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True"


def test_warmup_returns_seconds() -> None:
    assert warmup() >= 0.0


def test_lut_style_state_round_trip() -> None:
    lut = LUT3D(random_lut(5).table, domain_min=[0, 0.1, 0], title="t")
    style = LUTStyle(lut, kind="transfer", info={"a": 1, "b": np.float32(2.5)})
    back = LUTStyle.from_state_dict(style.state_dict())
    assert back.kind == "transfer"
    assert back.lut.allclose(lut, 0.0)
    assert back.lut.title == "t"
    assert back.info == {"a": 1, "b": 2.5}
    assert back.bake(9).size == 9
