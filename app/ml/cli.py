"""Command-line access to the ML core: ``learn``, ``apply`` and ``export``.

``register(subparsers)`` adds the three subcommands to an ``argparse`` subparsers object (the
project CLI, :mod:`app.cli`, calls it); each sets ``func`` to a handler ``(args) -> int``.
``python -m app.ml.cli ...`` runs them standalone through :func:`main`.

* ``learn --model dlut|nilut|adaptive_3dlut|auto --pair BEFORE AFTER [--pair ...]
  [--reference IMG ...]
  [--init WEIGHTS_DIR] [--time-budget S] [--option KEY=VALUE ...] --out PATH``: PATH ending in
  ``.cube`` gets the baked 33^3 LUT, any other PATH becomes a style directory (``model.pt``,
  ``metadata.json``, ``lut.cube``). Prints progress, then the metrics: ``holdout`` (2+ pairs:
  the error on photos each fold did not see) first, then doing nothing on them, the training
  error and the strength kept. ``--option`` values are checked by :mod:`app.ml.options`.
* ``apply --style STYLE IN OUT [--strength S] [--quality Q] [--output-profile source|srgb]``:
  STYLE is a ``.cube``, a style directory or a directory of published adaptive-3D-LUT weights.
  Full resolution, graded in the sRGB working space; the result is upright (orientation 1), in
  the photo's color space with its ICC profile (``srgb``: converted), 16-bit for 16-bit PNG /
  TIFF; OUT's extension picks the format. For a learned style it also prints the share of the
  photo's pixels whose colors none of its training photos showed (:mod:`app.ml.coverage`).
* ``export --style STYLE [--size 33] --out X.cube``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.ml.coverage import ColorCoverage

__all__ = ["main", "register"]


def _parse_option(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def register(subparsers: Any) -> None:
    """Add ``learn``, ``apply`` and ``export`` to an argparse subparsers object."""
    p = subparsers.add_parser("learn", help="learn a style from before/after pairs or references")
    p.add_argument("--model", default="dlut", choices=["dlut", "nilut", "adaptive_3dlut", "auto"])
    # every file name is parsed to a Path here: the loaders refuse a str (never a file name)
    p.add_argument(
        "--pair", nargs=2, type=Path, action="append", default=[], metavar=("BEFORE", "AFTER")
    )
    p.add_argument("--reference", nargs="+", type=Path, action="extend", default=[], metavar="IMG")
    p.add_argument("--init", dest="init_weights", type=Path, metavar="WEIGHTS_DIR")
    p.add_argument(
        "--time-budget", type=float, default=None, metavar="S", help="whole learn (default 60 s)"
    )
    p.add_argument("--option", type=_parse_option, action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--device", default=None, help="cpu or cuda (default: CUDA when present)")
    p.add_argument("--out", required=True, metavar="PATH", help="style directory, or a .cube file")
    p.set_defaults(func=cmd_learn)

    p = subparsers.add_parser("apply", help="apply a style to a photo at full resolution")
    p.add_argument(
        "--style",
        required=True,
        type=Path,
        help=".cube file, style directory or weights directory",
    )
    p.add_argument("input", type=Path, metavar="IN")
    p.add_argument("output", type=Path, metavar="OUT")
    p.add_argument("--strength", type=float, default=1.0)
    p.add_argument("--quality", type=int, default=92)
    p.add_argument(
        "--output-profile",
        choices=("source", "srgb"),
        default="source",
        help="source: keep the photo's color space and ICC profile (default); srgb: convert",
    )
    p.set_defaults(func=cmd_apply)

    p = subparsers.add_parser("export", help="export a style as a .cube 3D LUT")
    p.add_argument("--style", required=True, type=Path)
    p.add_argument("--size", type=int, default=33)
    p.add_argument("--title", default=None)
    p.add_argument("--out", required=True, type=Path, metavar="X.cube")
    p.set_defaults(func=cmd_export)


def _say(text: str) -> None:
    # sys.stdout.write rather than print: the project's ruff rules forbid print() in app/ml
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _progress(fraction: float, message: str) -> None:
    _say(f"[{fraction * 100:5.1f}%] {message}")


def _fail(message: str) -> int:
    sys.stderr.write(f"error: {message}\n")
    return 2


def cmd_learn(args: argparse.Namespace) -> int:
    from app.ml.cube_export import write_cube
    from app.ml.imaging import load_image, to_working
    from app.ml.learn import LearnInputError, learn_style

    def working(path: Path) -> Any:  # upright, 8 or 16 bits, in the working space (sRGB)
        pixels, info = load_image(path, keep_16bit=True)
        return to_working(pixels, info.icc_profile)

    if not args.pair and not args.reference:
        return _fail("give at least one --pair BEFORE AFTER or --reference IMG")
    try:
        pairs = [(working(b), working(a)) for b, a in args.pair]
        references = [working(r) for r in args.reference]
    except (OSError, ValueError) as exc:
        return _fail(str(exc))
    start = time.perf_counter()
    try:
        result = learn_style(
            args.model,
            pairs,
            references,
            options=dict(args.option),
            time_budget_s=args.time_budget,
            progress=_progress,
            device=args.device,
            init_weights=args.init_weights,
        )
    except LearnInputError as exc:
        return _fail(str(exc))
    out = Path(args.out)
    if out.suffix.lower() == ".cube":
        out.parent.mkdir(parents=True, exist_ok=True)
        write_cube(result.lut, out, title=f"PicFilter {result.model.kind} style")
    else:
        result.save(out)
    _say(f"learned a {result.model.kind} style in {time.perf_counter() - start:.1f} s -> {out}")
    m = result.metrics
    if m.get("holdout") is None and m.get("holdout_reason"):
        _say(f"  holdout: none ({m['holdout_reason']})")
    for group in ("holdout", "identity_holdout", "fit", "heldout_pixels"):
        scores = m.get(group)
        if isinstance(scores, dict):
            line = ", ".join(
                f"{k} {scores[k]:.3f}"
                for k in ("psnr", "delta_e2000_mean", "delta_e2000_p95")
                if isinstance(scores.get(k), float)
            )
            _say(f"  {group:17s} {line}")
    if "strength" in m:
        _say(f"  {'strength':17s} {m['strength']}")
    for key, label in (("auto", "auto chose"), ("selection", "kept variant")):
        if isinstance(m.get(key), dict):
            _say(f"  {label:17s} {m[key]['chosen']} ({m[key]['criterion']})")
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    from app.ml.imaging import apply_to_image_bytes
    from app.ml.learn import load_style_with_metrics

    try:
        style, metrics = load_style_with_metrics(args.style)
        data = args.input.read_bytes()
        suffix = args.output.suffix.lower().lstrip(".") or None
        encoded = apply_to_image_bytes(
            style,
            data,
            strength=args.strength,
            format=suffix,
            quality=args.quality,
            output_profile=args.output_profile,
            coverage=_coverage(metrics),
        )
    except (OSError, ValueError) as exc:
        return _fail(str(exc))
    args.output.write_bytes(encoded.data)
    size = f"{encoded.width}x{encoded.height}"
    _say(f"wrote {args.output} ({size}, {encoded.format}, {style.kind} style)")
    if encoded.unseen_share is not None:
        _say(
            f"  {encoded.unseen_share:.0%} of the photo's pixels show colors none of the style's "
            "training photos showed (the look is extrapolated there)"
        )
    return 0


def _coverage(metrics: dict[str, Any]) -> ColorCoverage | None:
    """The colors a learned style was taught (:mod:`app.ml.coverage`), as the service's apply
    reads them; ``None`` for a LUT file, published weights or a style learned without them."""
    from app.ml.coverage import ColorCoverage

    record = metrics.get("coverage")
    if not isinstance(record, dict):
        return None
    try:
        return ColorCoverage.from_dict(record)
    except ValueError:
        return None


def cmd_export(args: argparse.Namespace) -> int:
    from app.ml.cube_export import write_cube
    from app.ml.learn import load_style

    try:
        style = load_style(args.style)
        lut = style.bake(args.size)
    except (OSError, ValueError) as exc:
        return _fail(str(exc))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_cube(lut, out, title=args.title or f"PicFilter {style.kind} style")
    _say(f"wrote {out} (LUT_3D_SIZE {lut.size})")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m app.ml.cli learn|apply|export ...``"""
    parser = argparse.ArgumentParser(
        prog="python -m app.ml.cli", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
