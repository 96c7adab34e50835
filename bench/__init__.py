"""Benchmarks run by ``make bench`` (``python -m bench [NAME ...]``).

Each module in this package with a ``run() -> None`` function is one benchmark; it prints its own
table. Benchmarks measure; they never assert timings. Modules are found by name (every module not
starting with ``_``), so a new one is part of ``make bench`` as soon as it exists: ``lut_speed``,
``cube_io``, ``ml_quality`` (LUT-made looks, 3 pairs and one pair), ``real_edits`` (retoucher-like
pairs: shared look plus per-photo edits), ``nilut_quality``, ``adaptive_quality``, ``thumbnails``,
``e2e_styles``, ``gallery``. Shared helpers live here.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from app.ml.lut import LUT3D


def shared_data_dir() -> Path:
    """Where ``../shared/data`` lies (``PICFILTER_SHARED_DATA`` overrides)."""
    env = os.environ.get("PICFILTER_SHARED_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


def load_photo(path: Path, long_side: int | None = None) -> np.ndarray:
    """A photo as uint8 RGB, EXIF orientation applied, its long side reduced to ``long_side``
    (Lanczos) when it is larger."""
    from PIL import Image, ImageOps

    with Image.open(path) as raw:
        im = ImageOps.exif_transpose(raw).convert("RGB")
    if long_side and max(im.size) > long_side:
        scale = long_side / max(im.size)
        size = (round(im.width * scale), round(im.height * scale))
        im = im.resize(size, Image.Resampling.LANCZOS)
    return np.asarray(im)


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_server(
    cmd: list[str],
    env: dict[str, str],
    port: int,
    *,
    ready_path: str = "/healthz",
    timeout: float = 60.0,
    log_path: Path | None = None,
) -> Iterator[tuple[str, int]]:
    """Start ``cmd`` (a server on ``port``) in its own process group, wait until
    ``ready_path`` answers 200, yield ``(base_url, pid)``; stop the whole group afterwards."""
    import httpx

    root = Path(__file__).resolve().parents[1]
    log = open(log_path, "wb") if log_path else None  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        cmd,
        cwd=root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT if log else None,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                tail = log_path.read_text()[-3000:] if log_path else ""
                raise RuntimeError(f"the server exited at start\n{tail}")
            try:
                if httpx.get(f"{base}{ready_path}", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not become ready in {timeout:.0f} s")
            time.sleep(0.3)
        yield base, proc.pid
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if log is not None:
            log.close()


def exact_trilinear_u8(lut: LUT3D, img: np.ndarray) -> np.ndarray:
    """Float64 trilinear lookup (domain-aware) of uint8 pixels, rounded to uint8: the accuracy
    reference of the benchmarks (the tests keep an independent one of their own)."""
    n = lut.size
    t = lut.table.astype(np.float64)
    out = np.empty(img.shape, np.uint8)
    flat_in = img.reshape(-1, 3)
    flat_out = out.reshape(-1, 3)
    for start in range(0, flat_in.shape[0], 1 << 20):
        x = flat_in[start : start + (1 << 20)].astype(np.float64) / 255.0
        x = np.clip((x - lut.domain_min) / (lut.domain_max - lut.domain_min), 0, 1) * (n - 1)
        base = np.minimum(np.floor(x).astype(np.int64), n - 2)
        f = x - base
        acc = np.zeros_like(x)
        for corner in range(8):
            off = np.array([(corner >> 2) & 1, (corner >> 1) & 1, corner & 1])
            w = np.prod(np.where(off == 1, f, 1.0 - f), axis=1)
            idx = base + off
            acc += w[:, None] * t[idx[:, 0], idx[:, 1], idx[:, 2]]
        flat_out[start : start + acc.shape[0]] = np.clip(np.floor(acc * 255.0 + 0.5), 0, 255)
    return out
