"""Thumbnail generation of a 12.5 MP JPEG: ours (Pillow, draft mode) beside pyvips' ``thumbnail``.

Both sides do the whole job from the file on disk to WebP bytes (decode, shrink to fit 400x400,
encode at quality 80); ours also applies the EXIF orientation and converts the embedded
Display P3 profile to sRGB, as the thumbnail worker does. pyvips is only a yardstick here (a dev
dependency); the goal is to stay within 1.5x of it. Median of 7 runs after one warm-up each,
the two implementations alternating so that load from other processes hits both alike.

libvips caches operations by their arguments, so calling ``thumbnail`` again on the same file is
answered from memory; a real upload is thumbnailed once, so pyvips runs with that cache off
(``cache_set_max(0)``), and a last line shows the cached figure for the record.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

from app.ml import imaging
from bench import shared_data_dir

RUNS = 7
PHOTO = "photos/ultrahdr_sky.jpg"
Result = tuple[int, int, int]  # width, height, WebP bytes


def _interleaved(fns: dict[str, Callable[[], Result]], runs: int = RUNS) -> dict[str, list[float]]:
    """Time each function ``runs`` times, alternating them so load changes hit all alike."""
    for fn in fns.values():
        fn()  # warm-up: file cache, lazy imports, ICC transform cache
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1000)
    return times


def run() -> None:
    path = shared_data_dir() / PHOTO
    if not path.is_file():
        print(f"skipped: {path} is missing (shared data not present)")
        return

    def ours() -> Result:
        t = imaging.make_thumbnail(Path(path), "jpeg", max_pixels=100_000_000)
        return t.width, t.height, len(t.data)

    fns: dict[str, Callable[[], Result]] = {"picfilter: Pillow draft + Lanczos + ICC->sRGB": ours}
    try:
        import pyvips
    except ImportError:
        pyvips = None
    if pyvips is not None:

        def vips() -> Result:
            img = pyvips.Image.thumbnail(str(path), 400)
            data = img.write_to_buffer(".webp[Q=80]")
            return img.width, img.height, len(data)

        # libvips caches operations: the same call on the same file is answered from memory.
        # A real upload is thumbnailed once, so the yardstick runs with the cache off.
        pyvips.cache_set_max(0)
        fns["pyvips: thumbnail(path, 400) -> webp Q80"] = vips

    outputs = {name: fn() for name, fn in fns.items()}
    times = _interleaved(fns)
    medians = {name: statistics.median(t) for name, t in times.items()}
    names = list(fns)
    base = medians[names[1]] if len(names) > 1 else None
    print(f"{path.name}: 4080x3072 JPEG (12.5 MP) -> WebP, median of {RUNS} interleaved runs")
    print(f"{'implementation':<48} {'median ms':>9} {'min ms':>7} {'output':>17} {'/ pyvips':>9}")
    for name in names:
        w, h, n = outputs[name]
        ratio = f"{medians[name] / base:.2f}x" if base else "n/a"
        print(
            f"{name:<48} {medians[name]:>9.1f} {min(times[name]):>7.1f} "
            f"{f'{w}x{h} {n} B':>17} {ratio:>9}"
        )
    if base is None:
        print("pyvips is not installed: no comparison")
        return
    # For the record: the same call with libvips' operation cache on (its default).
    pyvips.cache_set_max(100)
    cached = statistics.median(_interleaved({"vips": fns[names[1]]})["vips"])
    print(
        f"{'(pyvips, its op cache on: same call repeated)':<48} {cached:>9.1f} {'':>7} {'':>17} "
        f"{cached / base:>8.2f}x"
    )
