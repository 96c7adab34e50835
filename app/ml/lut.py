"""3D lookup tables: the common currency of every PicFilter style.

Axis convention (the only place it is written down)
---------------------------------------------------
``LUT3D.table`` is a C-contiguous float32 array of shape ``(N, N, N, 3)`` indexed
``table[r, g, b, c]``: the first axis is the input **red** level, then green, then blue, and the
last axis holds the output (R, G, B). Lattice point ``k`` along an axis stands for the input value
``domain_min + k * (domain_max - domain_min) / (N - 1)`` of that channel (domain ``[0, 1]`` unless a
``.cube`` file said otherwise). ``.cube`` files list the lattice with the red index changing
fastest, i.e. ``table.transpose(2, 1, 0, 3)`` in C order; that conversion happens only at the file
boundary (:meth:`LUT3D.from_cube_order` / :meth:`LUT3D.to_cube_order`, used by
:mod:`app.ml.cube_export`). Output values may lie outside ``[0, 1]`` (many real LUTs overshoot a
little); integer outputs are clipped, float outputs are not.

Two trilinear implementations
-----------------------------
* :meth:`LUT3D.apply` is the serving path: a hand-written numba kernel (``prange`` over pixel
  chunks, float32 math, uint8/uint16 in and out, strength blending fused into the same pass).
  It never imports torch. Why not a library: OpenColorIO's optimized uint8 CPU processor gives
  the same results, but it works in place on a packed buffer (so a copy to keep the input), has
  to be split over threads by the caller, and has no strength blend; Pillow's ``Color3DLUT`` is
  single-threaded, 8-bit only and limited to 65^3 tables; ``colour-science`` interpolates in
  NumPy (1.1 s per megapixel here). Measured by ``python -m bench lut_speed`` on this 2-core
  machine while other jobs were running (methods interleaved, medians of 7): 12.5 MP uint8 with
  a 33^3 LUT in 78 ms versus 157 ms for OpenColorIO on 2 threads and 208 ms for Pillow, 0 levels
  from exact trilinear (OpenColorIO 0, Pillow 1). For 8- and 16-bit input the lattice offset and
  fraction of every code value are precomputed per channel (256 or 65,536 entries), so the inner
  loop does only the 8 gathers and 7 lerps per channel.
* :func:`apply_torch` is the training path: a differentiable trilinear lookup built on
  ``torch.nn.functional.grid_sample`` (gradients flow to the table and to the input colors);
  torch is imported inside the function only.

Threads: the kernel runs on numba's thread pool (``NUMBA_NUM_THREADS``, default: all cores).
Unless ``NUMBA_THREADING_LAYER`` is set, this module selects numba's ``workqueue`` layer: the only
other layer installed here is GNU OpenMP, which numba's documentation lists as not fork-safe
(Celery prefork forks workers), and TBB is absent. ``workqueue`` must not be entered by two
threads at once, so kernel launches are serialized with a lock (on 2 cores a second concurrent
launch would gain nothing anyway). Compiled kernels are cached on disk (``cache=True``); when no
cache directory is writable (read-only install), the module silently compiles in memory instead.
Call :func:`warmup` once per worker process (Celery ``worker_process_init``) to pay the
compilation up front (measured here: 2.5 s for the four kernels without a cache, 0.3 s
when loading them from the disk cache).

Example::

    >>> import numpy as np
    >>> lut = LUT3D.identity(17)
    >>> img = np.zeros((2, 2, 3), np.uint8)
    >>> bool((lut.apply(img) == img).all())
    True
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

MIN_SIZE = 2
MAX_SIZE = 256

__all__ = [
    "LUT3D",
    "LUTStyle",
    "MAX_SIZE",
    "MIN_SIZE",
    "apply_torch",
    "identity_table",
    "warmup",
]


def identity_table(size: int) -> np.ndarray:
    """The identity lattice ``table[r, g, b] = (r, g, b) / (size - 1)`` as float32 (N, N, N, 3)."""
    _check_size(size)
    ramp = np.linspace(0.0, 1.0, size, dtype=np.float64)
    r, g, b = np.meshgrid(ramp, ramp, ramp, indexing="ij")
    return np.ascontiguousarray(np.stack([r, g, b], axis=-1), dtype=np.float32)


def _check_size(size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, int | np.integer):
        raise TypeError(f"LUT size must be an int, got {size!r}")
    if not MIN_SIZE <= int(size) <= MAX_SIZE:
        raise ValueError(f"LUT size must be in {MIN_SIZE}..{MAX_SIZE}, got {size}")


def _as_domain(value: Sequence[float] | np.ndarray | float, name: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.repeat(arr, 3)
    if arr.shape != (3,) or not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be 3 finite numbers, got {value!r}")
    return arr


class LUT3D:
    """A validated 3D LUT: float32 ``table[r, g, b, c]`` of shape (N, N, N, 3), 2 <= N <= 256.

    ``LUT3D(table)`` is the canonical form; ``LUT3D(size, table)`` (as STYLE.md writes it) is also
    accepted and checks that ``size`` matches. ``domain_min``/``domain_max`` (per channel) are the
    input values that the first and last lattice points stand for (``.cube`` DOMAIN_MIN/MAX);
    inputs outside the domain are clamped to it. The table is copied and made read-only.
    """

    __slots__ = ("_cache", "domain_max", "domain_min", "table", "title")

    table: np.ndarray
    domain_min: np.ndarray
    domain_max: np.ndarray
    title: str | None

    def __init__(
        self,
        table_or_size: np.ndarray | int | Any,
        table: np.ndarray | Any | None = None,
        *,
        domain_min: Sequence[float] | np.ndarray | float = 0.0,
        domain_max: Sequence[float] | np.ndarray | float = 1.0,
        title: str | None = None,
    ) -> None:
        if isinstance(table_or_size, int | np.integer) and not isinstance(table_or_size, bool):
            if table is None:
                raise TypeError("LUT3D(size, table) needs a table")
            expected: int | None = int(table_or_size)
            _check_size(int(table_or_size))
        else:
            if table is not None:
                raise TypeError("use LUT3D(table) or LUT3D(size, table)")
            table, expected = table_or_size, None
        if hasattr(table, "detach"):  # a torch tensor
            table = table.detach().cpu().numpy()
        arr = np.array(table, dtype=np.float32, copy=True, order="C")
        if (
            arr.ndim != 4
            or arr.shape[-1] != 3
            or not (arr.shape[0] == arr.shape[1] == arr.shape[2])
        ):
            raise ValueError(f"LUT table must have shape (N, N, N, 3), got {arr.shape}")
        size = arr.shape[0]
        _check_size(size)
        if expected is not None and expected != size:
            raise ValueError(f"LUT size {expected} does not match table shape {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError("LUT table contains NaN or infinite values")
        dmin = _as_domain(domain_min, "domain_min")
        dmax = _as_domain(domain_max, "domain_max")
        if not np.all(dmax > dmin):
            raise ValueError(
                f"domain_max must exceed domain_min per channel, got {dmin.tolist()} "
                f"and {dmax.tolist()}"
            )
        arr.flags.writeable = False
        dmin.flags.writeable = False
        dmax.flags.writeable = False
        self.table = arr
        self.domain_min = dmin
        self.domain_max = dmax
        self.title = title
        self._cache: dict[Any, Any] = {}

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def identity(cls, size: int = 33) -> LUT3D:
        """The LUT that changes nothing (up to rounding)."""
        return cls(identity_table(size))

    @classmethod
    def from_cube_order(
        cls,
        data: np.ndarray,
        size: int,
        *,
        domain_min: Sequence[float] | np.ndarray | float = 0.0,
        domain_max: Sequence[float] | np.ndarray | float = 1.0,
        title: str | None = None,
    ) -> LUT3D:
        """Build from ``size**3`` rows of RGB in ``.cube`` order (red index fastest)."""
        _check_size(size)
        arr = np.asarray(data, dtype=np.float32)
        if arr.shape != (size**3, 3):
            raise ValueError(f"expected {size**3} rows of 3 values, got shape {arr.shape}")
        table = arr.reshape(size, size, size, 3).transpose(2, 1, 0, 3)
        return cls(table, domain_min=domain_min, domain_max=domain_max, title=title)

    def to_cube_order(self) -> np.ndarray:
        """The lattice as ``(N**3, 3)`` rows in ``.cube`` order (red index fastest)."""
        return np.ascontiguousarray(self.table.transpose(2, 1, 0, 3)).reshape(-1, 3)

    # -- properties --------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return int(self.table.shape[0])

    @property
    def has_default_domain(self) -> bool:
        return bool(np.all(self.domain_min == 0.0) and np.all(self.domain_max == 1.0))

    def __repr__(self) -> str:
        dom = (
            ""
            if self.has_default_domain
            else f", domain={self.domain_min.tolist()}..{self.domain_max.tolist()}"
        )
        title = f", title={self.title!r}" if self.title else ""
        return f"LUT3D(size={self.size}{dom}{title})"

    def allclose(self, other: LUT3D, atol: float = 1e-6) -> bool:
        """Same size, same domain, and tables equal within ``atol``."""
        return (
            self.size == other.size
            and np.allclose(self.domain_min, other.domain_min, atol=atol, rtol=0)
            and np.allclose(self.domain_max, other.domain_max, atol=atol, rtol=0)
            and bool(np.allclose(self.table, other.table, atol=atol, rtol=0))
        )

    # -- application ------------------------------------------------------------------------
    def apply(self, image: np.ndarray, strength: float = 1.0) -> np.ndarray:
        """Grade ``image`` (shape ``(..., 3)``) by trilinear interpolation.

        uint8 and uint16 come back in the same dtype (rounded, clipped); float input (float32 or
        float64, nominally in ``[0, 1]``) comes back as float32, not clipped. ``strength`` in
        ``[0, 1]`` blends linearly between the input (0) and the graded image (1).

        >>> import numpy as np
        >>> LUT3D.identity(2).apply(np.array([[10, 200, 30]], np.uint8)).tolist()
        [[10, 200, 30]]
        """
        img = np.asarray(image)
        if img.ndim < 1 or img.shape[-1] != 3:
            raise ValueError(f"image must have shape (..., 3), got {img.shape}")
        strength = float(strength)
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {strength}")
        if img.dtype == np.uint8 or img.dtype == np.uint16:
            if strength == 0.0:
                return img.copy()
            return self._apply_int(img, strength)
        if np.issubdtype(img.dtype, np.floating):
            src = np.ascontiguousarray(img, dtype=np.float32)
            if strength == 0.0:
                return src.copy()
            return self._apply_float(src, strength)
        raise TypeError(f"image dtype must be uint8, uint16 or float, got {img.dtype}")

    def _apply_int(self, img: np.ndarray, strength: float) -> np.ndarray:
        maxv = 255 if img.dtype == np.uint8 else 65535
        key = ("int", maxv)
        prepared = self._cache.get(key)
        if prepared is None:
            prepared = self._prepare_int(maxv)
            self._cache[key] = prepared
        flat_table, lo_r, fr_r, lo_g, fr_g, lo_b, fr_b = prepared
        src = np.ascontiguousarray(img).reshape(-1, 3)
        dst = np.empty_like(src)
        kernels = _get_kernels()
        if kernels is None:
            _apply_int_numpy(src, dst, flat_table, prepared[1:], self.size, maxv, strength)
        else:
            args = (
                src, dst, flat_table, lo_r, fr_r, lo_g, fr_g, lo_b, fr_b,
                np.uint64(self.size * self.size * 3), np.uint64(self.size * 3),
                np.float32(maxv), _n_chunks(src.shape[0]),
            )  # fmt: skip
            with _KERNEL_LOCK:
                if strength == 1.0:
                    kernels.apply_int(*args)
                else:
                    kernels.apply_int_blend(*args, np.float32(strength))
        return dst.reshape(img.shape)

    def _prepare_int(self, maxv: int) -> tuple[np.ndarray, ...]:
        n = self.size
        flat = np.ascontiguousarray(self.table, dtype=np.float32).ravel() * np.float32(maxv)
        strides = (n * n * 3, n * 3, 3)
        out: list[np.ndarray] = [flat]
        codes = np.arange(maxv + 1, dtype=np.float64) / maxv
        for c in range(3):
            coord = (codes - self.domain_min[c]) / (self.domain_max[c] - self.domain_min[c])
            coord = np.clip(coord * (n - 1), 0.0, n - 1)
            lo = np.minimum(np.floor(coord), n - 2)
            out.append((lo * strides[c]).astype(np.uint64))
            out.append((coord - lo).astype(np.float32))
        return tuple(out)

    def _apply_float(self, src: np.ndarray, strength: float) -> np.ndarray:
        n = self.size
        flat = self.table.ravel()
        scale = ((n - 1) / (self.domain_max - self.domain_min)).astype(np.float32)
        offset = (-self.domain_min * (n - 1) / (self.domain_max - self.domain_min)).astype(
            np.float32
        )
        pix = src.reshape(-1, 3)
        dst = np.empty_like(pix)
        kernels = _get_kernels()
        if kernels is None:
            _apply_float_numpy(pix, dst, self.table, scale, offset, strength)
        else:
            with _KERNEL_LOCK:
                kernels.apply_float(
                    pix, dst, flat, scale, offset, n, np.float32(strength),
                    _n_chunks(pix.shape[0]),
                )  # fmt: skip
        return dst.reshape(src.shape)

    # -- algebra -----------------------------------------------------------------------------
    def lattice_inputs(self, size: int | None = None) -> np.ndarray:
        """The input colors of the lattice points of a LUT of ``size`` over this LUT's domain."""
        size = self.size if size is None else size
        ident = identity_table(size).astype(np.float64)
        span = self.domain_max - self.domain_min
        return (self.domain_min + ident * span).astype(np.float32)

    def resample(self, size: int) -> LUT3D:
        """The same transform on a lattice of ``size`` points per axis (same domain)."""
        _check_size(size)
        if size == self.size:
            return self
        table = self.apply(self.lattice_inputs(size))
        return LUT3D(
            table, domain_min=self.domain_min, domain_max=self.domain_max, title=self.title
        )

    def compose(self, other: LUT3D) -> LUT3D:
        """A LUT that applies ``self`` first, then ``other`` (on ``self``'s lattice and domain)."""
        return LUT3D(
            other.apply(self.table),
            domain_min=self.domain_min,
            domain_max=self.domain_max,
            title=self.title,
        )

    def with_title(self, title: str | None) -> LUT3D:
        return LUT3D(
            self.table, domain_min=self.domain_min, domain_max=self.domain_max, title=title
        )


# ---------------------------------------------------------------------------------------------
# numba kernels (compiled lazily; numpy fallback when numba is unavailable)
# ---------------------------------------------------------------------------------------------
numba: Any
try:
    import numba
    from numba import prange
except ImportError:  # pragma: no cover - numba is a dependency
    numba = None
    prange = range  # type: ignore[assignment,misc]

_KERNEL_LOCK = threading.Lock()
_CHUNK = 32768


def _n_chunks(n_pixels: int) -> int:
    return max(1, min(1024, (n_pixels + _CHUNK - 1) // _CHUNK))


class _Kernels:
    def __init__(self, **kernels: Callable[..., None]) -> None:
        self.apply_int = kernels["apply_int"]
        self.apply_int_blend = kernels["apply_int_blend"]
        self.apply_float = kernels["apply_float"]


_kernels: _Kernels | None = None
_kernels_failed = False

# The kernels below index with uint64 offsets on purpose: numba emits a negative-index wraparound
# check for every signed index, which made the uint8 loop 1.8x slower on the 12.5 MP benchmark.
# The strength blend is a separate kernel rather than a runtime branch (that branch cost ~25 %).


def _trilerp(t, i, sr, sg, fr, fg, fb):  # type: ignore[no-untyped-def]
    """Trilinear value of flat table ``t`` at offset ``i`` (lower corner, channel included)."""
    three = np.uint64(3)
    c000 = t[i]
    c001 = t[i + three]
    c010 = t[i + sg]
    c011 = t[i + sg + three]
    c100 = t[i + sr]
    c101 = t[i + sr + three]
    c110 = t[i + sr + sg]
    c111 = t[i + sr + sg + three]
    c00 = c000 + fb * (c001 - c000)
    c01 = c010 + fb * (c011 - c010)
    c10 = c100 + fb * (c101 - c100)
    c11 = c110 + fb * (c111 - c110)
    c0 = c00 + fg * (c01 - c00)
    c1 = c10 + fg * (c11 - c10)
    return c0 + fr * (c1 - c0)


if numba is not None:
    _trilerp = numba.njit(inline="always", fastmath=True)(_trilerp)


def _apply_int_kernel(src, dst, t, lo_r, fr_r, lo_g, fr_g, lo_b, fr_b, sr, sg, maxv, nchunks):  # type: ignore[no-untyped-def]  # noqa: E501
    n_pix = src.shape[0]
    step = (n_pix + nchunks - 1) // nchunks
    for chunk in prange(nchunks):
        for p in range(chunk * step, min(n_pix, chunk * step + step)):
            r = src[p, 0]
            g = src[p, 1]
            b = src[p, 2]
            base = lo_r[r] + lo_g[g] + lo_b[b]
            fr = fr_r[r]
            fg = fr_g[g]
            fb = fr_b[b]
            for c in range(3):
                v = _trilerp(t, base + np.uint64(c), sr, sg, fr, fg, fb)
                dst[p, c] = min(max(v, np.float32(0.0)), maxv) + np.float32(0.5)


def _apply_int_blend_kernel(
    src, dst, t, lo_r, fr_r, lo_g, fr_g, lo_b, fr_b, sr, sg, maxv, nchunks, strength
):  # type: ignore[no-untyped-def]  # noqa: E501
    n_pix = src.shape[0]
    step = (n_pix + nchunks - 1) // nchunks
    for chunk in prange(nchunks):
        for p in range(chunk * step, min(n_pix, chunk * step + step)):
            r = src[p, 0]
            g = src[p, 1]
            b = src[p, 2]
            base = lo_r[r] + lo_g[g] + lo_b[b]
            fr = fr_r[r]
            fg = fr_g[g]
            fb = fr_b[b]
            for c in range(3):
                v = _trilerp(t, base + np.uint64(c), sr, sg, fr, fg, fb)
                x = np.float32(src[p, c])
                v = x + strength * (v - x)
                dst[p, c] = min(max(v, np.float32(0.0)), maxv) + np.float32(0.5)


def _apply_float_kernel(src, dst, t, scale, offset, n, strength, nchunks):  # type: ignore[no-untyped-def]
    n_pix = src.shape[0]
    step = (n_pix + nchunks - 1) // nchunks
    top = np.float32(n - 1)
    last = np.uint64(n - 2)
    sr = np.uint64(n * n * 3)
    sg = np.uint64(n * 3)
    three = np.uint64(3)
    blend = strength != np.float32(1.0)
    for chunk in prange(nchunks):
        for p in range(chunk * step, min(n_pix, chunk * step + step)):
            x0 = src[p, 0] * scale[0] + offset[0]
            x1 = src[p, 1] * scale[1] + offset[1]
            x2 = src[p, 2] * scale[2] + offset[2]
            # "not (x > 0)" also catches NaN, which must never become an index.
            if not x0 > 0:
                x0 = np.float32(0.0)
            if not x1 > 0:
                x1 = np.float32(0.0)
            if not x2 > 0:
                x2 = np.float32(0.0)
            x0 = min(x0, top)
            x1 = min(x1, top)
            x2 = min(x2, top)
            i0 = min(np.uint64(x0), last)
            i1 = min(np.uint64(x1), last)
            i2 = min(np.uint64(x2), last)
            fr = x0 - np.float32(i0)
            fg = x1 - np.float32(i1)
            fb = x2 - np.float32(i2)
            base = i0 * sr + i1 * sg + i2 * three
            for c in range(3):
                v = _trilerp(t, base + np.uint64(c), sr, sg, fr, fg, fb)
                if blend:
                    x = src[p, c]
                    v = x + strength * (v - x)
                dst[p, c] = v


def _compile(fn: Callable[..., None]) -> Callable[..., None]:
    from numba import njit

    options: dict[str, Any] = {"parallel": True, "fastmath": True, "nogil": True}
    if os.environ.get("PICFILTER_NUMBA_CACHE", "1") != "0":
        try:
            return njit(cache=True, **options)(fn)  # type: ignore[no-any-return]
        except Exception:  # no writable cache location (read-only install): compile in memory
            pass
    return njit(cache=False, **options)(fn)  # type: ignore[no-any-return]


def _get_kernels() -> _Kernels | None:
    global _kernels, _kernels_failed
    if _kernels is not None or _kernels_failed:
        return _kernels
    with _KERNEL_LOCK:
        if _kernels is not None or _kernels_failed:
            return _kernels
        if numba is None:  # pragma: no cover - numba is a dependency
            warnings.warn("numba unavailable: LUT3D.apply uses the slower NumPy path", stacklevel=3)
            _kernels_failed = True
            return None
        try:
            if "NUMBA_THREADING_LAYER" not in os.environ:
                numba.config.THREADING_LAYER = "workqueue"
            _kernels = _Kernels(
                apply_int=_compile(_apply_int_kernel),
                apply_int_blend=_compile(_apply_int_blend_kernel),
                apply_float=_compile(_apply_float_kernel),
            )
        except Exception as exc:  # pragma: no cover - defensive: keep serving without numba
            warnings.warn(f"numba kernels unavailable ({exc}); using NumPy", stacklevel=3)
            _kernels_failed = True
    return _kernels


def warmup() -> float:
    """Compile (or load from the disk cache) the uint8, uint16 and float kernels; seconds taken.

    Call once per worker process (e.g. Celery ``worker_process_init``) so the first request does
    not pay the compilation.
    """
    import time

    start = time.perf_counter()
    lut = LUT3D.identity(2)
    lut.apply(np.zeros((1, 2, 3), np.uint8), 0.5)
    lut.apply(np.zeros((1, 2, 3), np.uint8))
    lut.apply(np.zeros((1, 2, 3), np.uint16))
    lut.apply(np.zeros((1, 2, 3), np.float32))
    return time.perf_counter() - start


def _trilinear_numpy(table: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Exact trilinear lookup in float64 for lattice coordinates ``coords`` (P, 3) in [0, N-1]."""
    n = table.shape[0]
    lo = np.minimum(np.floor(coords), n - 2).astype(np.int64)
    f = coords - lo
    out = np.zeros((coords.shape[0], 3), np.float64)
    for dr in (0, 1):
        wr = f[:, 0] if dr else 1.0 - f[:, 0]
        for dg in (0, 1):
            wg = f[:, 1] if dg else 1.0 - f[:, 1]
            for db in (0, 1):
                wb = f[:, 2] if db else 1.0 - f[:, 2]
                corner = table[lo[:, 0] + dr, lo[:, 1] + dg, lo[:, 2] + db]
                out += (wr * wg * wb)[:, None] * corner
    return out


def _apply_int_numpy(
    src: np.ndarray,
    dst: np.ndarray,
    flat_table: np.ndarray,
    prepared: tuple[np.ndarray, ...],
    n: int,
    maxv: int,
    strength: float,
) -> None:  # pragma: no cover - used only without numba
    table = flat_table.reshape(n, n, n, 3).astype(np.float64)
    strides = (n * n * 3, n * 3, 3)
    for start in range(0, src.shape[0], 1 << 18):
        part = src[start : start + (1 << 18)]
        coords = np.empty(part.shape, np.float64)
        for c in range(3):
            lo, fr = prepared[2 * c], prepared[2 * c + 1]
            coords[:, c] = lo[part[:, c]].astype(np.int64) // strides[c] + fr[part[:, c]]
        v = _trilinear_numpy(table, coords)
        v = part + strength * (v - part)
        dst[start : start + part.shape[0]] = np.clip(v, 0, maxv) + 0.5


def _apply_float_numpy(
    src: np.ndarray,
    dst: np.ndarray,
    table: np.ndarray,
    scale: np.ndarray,
    offset: np.ndarray,
    strength: float,
) -> None:  # pragma: no cover - used only without numba
    n = table.shape[0]
    t64 = table.astype(np.float64)
    for start in range(0, src.shape[0], 1 << 18):
        part = src[start : start + (1 << 18)].astype(np.float64)
        coords = np.nan_to_num(part * scale + offset, nan=0.0)
        v = _trilinear_numpy(t64, np.clip(coords, 0, n - 1))
        dst[start : start + part.shape[0]] = part + strength * (v - part)


# ---------------------------------------------------------------------------------------------
# differentiable path (training)
# ---------------------------------------------------------------------------------------------
def apply_torch(
    table: torch.Tensor,
    rgb: torch.Tensor,
    *,
    domain_min: Sequence[float] | None = None,
    domain_max: Sequence[float] | None = None,
) -> torch.Tensor:
    """Differentiable trilinear lookup: ``rgb`` (..., 3) through ``table`` (N, N, N, 3).

    ``table`` uses this module's ``[r, g, b, c]`` convention; a batch of tables ``(B, N, N, N,
    3)`` with ``rgb`` of shape ``(B, ..., 3)`` is also accepted. Gradients flow to ``table`` and
    to ``rgb``. Inputs outside the domain are clamped to its border, like :meth:`LUT3D.apply`.

    >>> import torch
    >>> t = torch.tensor(identity_table(5))
    >>> x = torch.rand(4, 3)
    >>> bool(torch.allclose(apply_torch(t, x), x, atol=1e-6))
    True
    """
    import torch
    import torch.nn.functional as F  # noqa: N812

    batched = table.dim() == 5
    tables = table if batched else table.unsqueeze(0)
    if (
        tables.dim() != 5
        or tables.shape[-1] != 3
        or not (tables.shape[1] == tables.shape[2] == tables.shape[3])
    ):
        raise ValueError(
            f"table must have shape (N, N, N, 3) or (B, N, N, N, 3), got {tuple(table.shape)}"
        )
    if rgb.shape[-1] != 3:
        raise ValueError(f"rgb must have shape (..., 3), got {tuple(rgb.shape)}")
    batch = tables.shape[0]
    lead_shape = rgb.shape[:-1]
    pts = rgb.reshape(batch, -1, 3) if batched else rgb.reshape(1, -1, 3)
    pts = pts.to(tables.dtype)
    if domain_min is not None or domain_max is not None:
        dmin = torch.as_tensor(
            domain_min if domain_min is not None else [0.0] * 3, dtype=pts.dtype, device=pts.device
        )
        dmax = torch.as_tensor(
            domain_max if domain_max is not None else [1.0] * 3, dtype=pts.dtype, device=pts.device
        )
        pts = (pts - dmin) / (dmax - dmin)
    # grid_sample's volume is [B, C, D, H, W] and its grid holds (x -> W, y -> H, z -> D):
    # with the table permuted to [B, c, r, g, b], x is blue, y green and z red.
    volume = tables.permute(0, 4, 1, 2, 3)
    grid = (pts.flip(-1) * 2.0 - 1.0).clamp(-1.0, 1.0).reshape(batch, -1, 1, 1, 3)
    out = F.grid_sample(volume, grid, mode="bilinear", padding_mode="border", align_corners=True)
    out = out.reshape(batch, 3, -1).permute(0, 2, 1)
    if not batched:
        out = out[0]
    return out.reshape(*lead_shape, 3)


# ---------------------------------------------------------------------------------------------
# a StyleModel backed by a plain LUT (imported .cube files, reference transfer)
# ---------------------------------------------------------------------------------------------
class LUTStyle:
    """A :class:`app.ml.base.StyleModel` that is just a LUT (kinds ``imported`` and ``transfer``).

    ``apply`` uses the numba path (no torch); ``state_dict`` holds torch tensors so that the
    model saves with ``torch.save`` and loads with ``weights_only=True``.
    """

    def __init__(
        self, lut: LUT3D, kind: str = "imported", info: dict[str, Any] | None = None
    ) -> None:
        if not isinstance(lut, LUT3D):
            raise TypeError(f"LUTStyle needs a LUT3D, got {type(lut).__name__}")
        self.lut = lut
        self.kind = kind
        self.info: dict[str, Any] = dict(info or {})

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kind={self.kind!r}, lut={self.lut!r})"

    def apply(self, image: np.ndarray, strength: float = 1.0) -> np.ndarray:
        return self.lut.apply(image, strength)

    def bake(self, size: int = 33) -> LUT3D:
        return self.lut.resample(size)

    def state_dict(self) -> dict[str, Any]:
        import torch

        return {
            "table": torch.from_numpy(self.lut.table.copy()),
            "domain_min": torch.from_numpy(self.lut.domain_min.copy()),
            "domain_max": torch.from_numpy(self.lut.domain_max.copy()),
            "title": self.lut.title or "",
            "kind": self.kind,
            "info": plain_value(self.info),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], kind: str | None = None) -> LUTStyle:
        lut = LUT3D(
            _to_numpy(state["table"]),
            domain_min=_to_numpy(state.get("domain_min", np.zeros(3))),
            domain_max=_to_numpy(state.get("domain_max", np.ones(3))),
            title=state.get("title") or None,
        )
        return cls(
            lut, kind=kind or str(state.get("kind", "imported")), info=dict(state.get("info", {}))
        )


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        return np.asarray(value.detach().cpu().numpy())
    return np.asarray(value)


def plain_value(value: Any) -> Any:
    """Make ``value`` safe for ``torch.load(weights_only=True)`` and JSON: dicts/lists of plain
    scalars (numpy scalars unwrapped, non-finite floats as None, anything else as its str)."""
    if isinstance(value, dict):
        return {str(k): plain_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain_value(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return str(value)
