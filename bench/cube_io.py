"""``.cube`` read/write speed (goal: read + write of a 65^3 file under 0.3 s).

A random 65^3 LUT with values a little outside [0, 1] and a non-default domain is written with
:func:`app.ml.cube_export.write_cube` and read back with :func:`read_cube_file`; medians of 5 runs.
Also the time to read every shared ``luts/*.cube`` and ``parser-fixtures/*.cube`` file, and the
round-trip error.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import shared_data_dir

RUNS = 5


def _median_s(fn, runs: int = RUNS) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run() -> None:
    from app.ml.cube_export import read_cube_file, write_cube
    from app.ml.lut import LUT3D

    rng = np.random.default_rng(0)
    print(f"{'LUT':<28} {'write s':>8} {'read s':>8} {'total s':>8} {'file MB':>8} {'max err':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for size in (33, 65):
            table = (rng.random((size, size, size, 3)) * 1.2 - 0.1).astype(np.float32)
            lut = LUT3D(table, domain_min=[0, 0, 0], domain_max=[1, 1, 1])
            path = Path(tmp) / f"bench_{size}.cube"
            write_s = _median_s(lambda lut=lut, path=path: write_cube(lut, path))
            read_s = _median_s(lambda path=path: read_cube_file(path))
            back = read_cube_file(path)
            err = float(np.abs(back.table - lut.table).max())
            mb = path.stat().st_size / 1e6
            total = write_s + read_s
            name = f"random {size}^3"
            print(f"{name:<28} {write_s:>8.3f} {read_s:>8.3f} {total:>8.3f} {mb:>8.2f} {err:>9.1e}")
    data = shared_data_dir() / "luts"
    if not data.is_dir():
        print(f"shared LUTs skipped: {data} not found")
        return
    print(f"\n{'shared file':<44} {'read ms':>8} {'result':>24}")
    for path in sorted(data.glob("*.cube")) + sorted((data / "parser-fixtures").glob("*.cube")):
        start = time.perf_counter()
        try:
            lut = read_cube_file(path)
            result = f"{lut.size}^3" + ("" if lut.has_default_domain else " +domain")
        except ValueError as exc:
            result = f"refused: {exc}"[:24]
        ms = (time.perf_counter() - start) * 1000
        print(f"{path.relative_to(data).as_posix():<44} {ms:>8.1f} {result:>24}")
