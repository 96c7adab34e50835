"""LUT application speed: the numba applier vs OpenColorIO vs Pillow, the whole apply step, and
the cost of color management.

Image: ``photos/ultrahdr_sky.jpg`` (4080x3072, 12.5 MP) decoded to uint8; LUT:
``luts/classic_film.cube`` (33^3). Each timing is the median of 7 in-process runs after a warm-up;
the methods run interleaved (one call of each per round) so that load from other processes on a
shared machine affects them alike.
Accuracy: max |difference| in 8-bit levels against an exact float64 trilinear lookup written
here, on a 512x512 crop. OpenColorIO gets the same LUT through a ``Lut3DTransform`` (linear
interpolation) and an optimized uint8 CPU processor, applied in place on a packed copy split in
two halves on two threads (the copy is made outside the timed region). Pillow uses
``ImageFilter.Color3DLUT`` (its own 8-bit code, one thread).

Color management (:mod:`app.ml.imaging.color`): the photo's pixels re-encoded once as JPEG q92
tagged Display P3 (its own profile), tagged sRGB and untagged, then the whole apply step on each:
"plain" is the apply without color management (decode upright, LUT on the raw values, encode:
what the service did before), "color-managed" is :func:`~app.ml.imaging.apply_to_image_bytes`
(fast path for sRGB / untagged; a fused LUT sampled through LittleCMS for Display P3: "first"
clears the cache of fused LUTs before each run, "repeated" is the next photo of the same phone
with the same style), and, for comparison, "per-pixel LittleCMS" converts every pixel to sRGB
and back with Pillow's ImageCms.
Goal: color-managed Display P3 within 15 % of plain.
"""

from __future__ import annotations

import io
import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from bench import exact_trilinear_u8, shared_data_dir

RUNS = 7


def _interleaved(methods: dict[str, Callable[[], Any]], runs: int) -> dict[str, float]:
    """Median ms per method; one warm-up call each, then ``runs`` rounds of one call per method."""
    for fn in methods.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(runs):
        for name, fn in methods.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(v) * 1000.0 for name, v in times.items()}


def _ocio_applier(table: np.ndarray) -> Callable[[np.ndarray], None] | None:
    try:
        import PyOpenColorIO as ocio
    except ImportError:
        return None
    n = table.shape[0]
    transform = ocio.Lut3DTransform(n)
    transform.setInterpolation(ocio.INTERP_LINEAR)
    for r in range(n):
        for g in range(n):
            for b in range(n):
                transform.setValue(r, g, b, *(float(v) for v in table[r, g, b]))
    proc = (
        ocio.Config.CreateRaw()
        .getProcessor(transform)
        .getOptimizedCPUProcessor(
            ocio.BIT_DEPTH_UINT8, ocio.BIT_DEPTH_UINT8, ocio.OPTIMIZATION_DEFAULT
        )
    )
    pool = ThreadPoolExecutor(2)

    def part(block: np.ndarray) -> None:
        h, w = block.shape[:2]
        desc = ocio.PackedImageDesc(block, w, h, 3, ocio.BIT_DEPTH_UINT8, 1, 3, 3 * w)
        proc.apply(desc)

    def apply_in_place(buf: np.ndarray) -> None:
        half = buf.shape[0] // 2
        list(pool.map(part, [buf[:half], buf[half:]]))

    return apply_in_place


def run() -> None:
    data_dir = shared_data_dir()
    photo = data_dir / "photos" / "ultrahdr_sky.jpg"
    cube = data_dir / "luts" / "classic_film.cube"
    if not photo.is_file() or not cube.is_file():
        print(f"skipped: shared data not found under {data_dir}")
        return
    import numba
    from PIL import Image, ImageFilter

    from app.ml.cube_export import read_cube_file
    from app.ml.imaging import apply_to_image_bytes, encode_image, load_image
    from app.ml.lut import LUTStyle, warmup

    compile_s = warmup()
    data = photo.read_bytes()
    img, _ = load_image(data, apply_orientation=False)
    lut = read_cube_file(cube)
    h, w = img.shape[:2]
    crop = np.ascontiguousarray(img[1000:1512, 1500:2012])
    exact = exact_trilinear_u8(lut, crop).astype(np.int64)
    print(f"image {w}x{h} ({w * h / 1e6:.1f} MP) uint8, LUT {cube.name} {lut.size}^3")
    print(
        f"numba threads {numba.get_num_threads()} ({numba.threading_layer()} layer), "
        f"cpu count {os.cpu_count()}, warm-up/compile {compile_s:.2f} s"
    )
    img16 = img.astype(np.uint16) * 257
    imgf = img.astype(np.float32) / 255.0
    ocio = _ocio_applier(lut.table)
    ocio_buf = img.copy()
    pil_lut = ImageFilter.Color3DLUT(lut.size, lut.to_cube_order().ravel().tolist())
    pil_img = Image.fromarray(img)
    methods: dict[str, Callable[[], Any]] = {
        "LUT3D.apply uint8 (numba)": lambda: lut.apply(img),
        "LUT3D.apply uint8, strength 0.8": lambda: lut.apply(img, 0.8),
        "LUT3D.apply uint16": lambda: lut.apply(img16),
        "LUT3D.apply float32": lambda: lut.apply(imgf),
    }
    if ocio is not None:
        methods["OpenColorIO CPU uint8, 2 threads"] = lambda: ocio(ocio_buf)
    methods["Pillow Color3DLUT (1 thread)"] = lambda: pil_img.filter(pil_lut)
    times = _interleaved(methods, RUNS)

    crop16 = crop.astype(np.uint16) * 257
    diffs = {
        "LUT3D.apply uint8 (numba)": f"{np.abs(lut.apply(crop) - exact).max()}",
        "LUT3D.apply uint16": f"{np.abs(lut.apply(crop16) / 257.0 - exact).max():.2f}",
        "LUT3D.apply float32": (
            f"{np.abs(np.clip(lut.apply(crop / np.float32(255)), 0, 1) * 255 - exact).max():.2f}"
        ),
    }
    if ocio is not None:
        check = crop.copy()
        ocio(check)
        diffs["OpenColorIO CPU uint8, 2 threads"] = f"{np.abs(check - exact).max()}"
    pil_crop = np.asarray(Image.fromarray(crop).filter(pil_lut)).astype(np.int64)
    diffs["Pillow Color3DLUT (1 thread)"] = f"{np.abs(pil_crop - exact).max()}"

    print("(methods run interleaved, round by round, so that machine load hits them alike)")
    print(f"\n{'method':<36} {'median ms':>10} {'max |diff| vs exact (levels)':>30}")
    for name, ms in times.items():
        print(f"{name:<36} {ms:>10.1f} {diffs.get(name, '-'):>30}")
    if ocio is None:
        print("OpenColorIO: not installed")

    style = LUTStyle(lut)

    def decode_encode() -> None:
        pixels, info = load_image(data, apply_orientation=False)
        encode_image(pixels, "jpeg", 92, info.icc_profile, info.exif)

    def full_apply() -> None:
        apply_to_image_bytes(style, data, quality=92)

    pipe = _interleaved(
        {"decode + encode only": decode_encode, "decode + LUT + encode": full_apply}, 5
    )
    print(f"\n{'whole apply step (JPEG q92)':<36} {'median ms':>10}")
    for name, ms in pipe.items():
        print(f"{name:<36} {ms:>10.1f}")
    ratio = pipe["decode + LUT + encode"] / pipe["decode + encode only"]
    print(f"{'ratio (goal <= 1.3)':<36} {ratio:>10.2f}")
    out = apply_to_image_bytes(style, data, quality=92)
    with Image.open(io.BytesIO(out.data)) as im:
        print(f"output {im.size[0]}x{im.size[1]}, ICC kept: {bool(im.info.get('icc_profile'))}")
    color_management(data, style)


def color_management(data: bytes, style: Any) -> None:
    """The cost of color management on the 12.5 MP photo (see the module docstring)."""
    from PIL import Image, ImageCms

    from app.ml.imaging import (
        apply_to_image_bytes,
        color,
        describe_profile,
        encode_image,
        load_image,
    )

    pixels, info = load_image(data)
    p3 = info.icc_profile
    if not p3 or color.is_working_space(p3):
        print("skipped color management: the photo is not tagged with a wide-gamut profile")
        return
    srgb_icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    files = {
        "Display P3": encode_image(pixels, "jpeg", 92, p3, info.exif),
        "sRGB": encode_image(pixels, "jpeg", 92, srgb_icc, info.exif),
        "untagged": encode_image(pixels, "jpeg", 92, None, info.exif),
    }
    del pixels

    def plain(blob: bytes) -> Callable[[], Any]:
        def run() -> None:
            px, inf = load_image(blob)
            encode_image(style.apply(px), "jpeg", 92, inf.icc_profile, inf.exif)

        return run

    def managed(blob: bytes, *, first: bool) -> Callable[[], Any]:
        def run() -> None:
            if first:  # the first apply of this style to a photo with this profile
                color.FUSED_CACHE.clear()
            apply_to_image_bytes(style, blob, quality=92)

        return run

    def per_pixel(blob: bytes) -> Callable[[], Any]:
        def run() -> None:
            px, inf = load_image(blob)
            work = color.convert(px, inf.icc_profile, None)
            out = color.convert(style.apply(work), None, inf.icc_profile)
            encode_image(out, "jpeg", 92, inf.icc_profile, inf.exif)

        return run

    methods: dict[str, Callable[[], Any]] = {}
    for tag, blob in files.items():
        methods[f"{tag}: plain (no color management)"] = plain(blob)
        methods[f"{tag}: color-managed"] = managed(blob, first=True)
    methods["Display P3: color-managed, repeated"] = managed(files["Display P3"], first=False)
    methods["Display P3: per-pixel LittleCMS"] = per_pixel(files["Display P3"])
    times = _interleaved(methods, 5)
    sample = {"fused": lambda: color.fused_lut(lambda x: style.apply(x), p3, p3, bits=8)}
    build = _interleaved(sample, RUNS)["fused"]

    print("\ncolor management, whole apply step (JPEG q92, 12.5 MP; medians of 5, interleaved)")
    print(f"{'source / method':<46} {'median ms':>10} {'vs plain':>9}")
    for name, ms in times.items():
        tag = name.split(":")[0]
        base = times[f"{tag}: plain (no color management)"]
        print(f"{name:<46} {ms:>10.1f} {(ms / base - 1) * 100:>+8.1f}%")
    print(f"{'  of which: fused LUT sampling (52^3, LittleCMS)':<46} {build:>10.1f}")
    over = times["Display P3: color-managed"] / times["Display P3: plain (no color management)"]
    print(f"{'Display P3 overhead, first apply (goal <= 15 %)':<46} {(over - 1) * 100:>+9.1f}%")
    with Image.open(io.BytesIO(apply_to_image_bytes(style, files["Display P3"]).data)) as im:
        kept = describe_profile(im.info.get("icc_profile"))
    print(f"Display P3 output profile: {kept}")
