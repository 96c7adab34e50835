"""Read and write ``.cube`` 3D LUT files (Adobe Cube 1.0 and the DaVinci Resolve dialect).

What is understood
------------------
* ``TITLE "..."``, ``#`` comment lines and trailing ``# ...`` comments anywhere, blank lines,
  LF / CRLF / CR line endings, a UTF-8 BOM.
* ``LUT_3D_SIZE N`` (2..256) with ``N**3`` rows, red index changing fastest.
* ``DOMAIN_MIN`` / ``DOMAIN_MAX`` (Adobe, per channel): kept on the :class:`~app.ml.lut.LUT3D` as
  its input domain (inputs are rescaled from the domain to the lattice, and clamped), so reading
  and writing a file round-trips exactly.
* ``LUT_1D_SIZE`` alone (a per-channel 1D LUT): turned into the equivalent 3D LUT. A 3D lattice
  whose values depend only on their own channel reproduces per-channel linear interpolation
  exactly, so a 1D LUT of up to 65 entries converts without error; a longer one is sampled at 65
  points per axis (an approximation; the 1D table's shape between samples is lost).
* Resolve's 1D shaper before a 3D table (``LUT_1D_SIZE`` + ``LUT_3D_SIZE``, 1D rows first, then
  3D rows; ``LUT_1D_INPUT_RANGE`` / ``LUT_3D_INPUT_RANGE``): baked into one 3D LUT of
  ``max(65, N)`` points per axis over the shaper's input range by evaluating shaper-then-cube at
  every lattice point. This is an approximation (a shaper exists because the cube alone is too
  coarse for that curve); ``bench.cube_io`` and the tests measure the error on the fixtures.
* Values outside ``[0, 1]`` are kept. Unknown upper-case keywords in the header (e.g. Resolve's
  ``LUT_IN_VIDEO_RANGE``) are ignored.

Errors are :class:`CubeParseError` (a ``ValueError``) whose message starts with the 1-based line
number, e.g. ``"line 7: expected 3 numbers, got 2"``.

Why hand-written: ``colour-science`` reads and writes both dialects, but took 0.43 s to read
and 0.82 s to write a 65^3 file here (a Python loop over lines), ignores ``DOMAIN_MIN/MAX`` in
Resolve-style files and raises without line numbers. OpenColorIO reads a 65^3 ``.cube`` in about
0.08 s and names the bad line, but it only reads files from disk, cannot write ``.cube``, and
hands back a processor rather than the table (getting the lattice means sampling it). Here the
data block is parsed with NumPy (``np.fromstring``) and validated with vectorized byte scans, and
writing formats the digits with NumPy: a 65^3 file reads and writes in well under 0.3 s
(``python -m bench cube_io`` prints the measured times). ``.3dl`` and HaldCLUT PNGs are
:mod:`app.ml.lut_formats`, whose :func:`~app.ml.lut_formats.read_lut` reads any LUT file (other
formats, ``.csp``, ``.spi3d``, ..., through OpenColorIO).

Example::

    >>> from app.ml.lut import LUT3D
    >>> text = dumps_cube(LUT3D.identity(2), title="id")
    >>> read_cube_text(text).allclose(LUT3D.identity(2))
    True
    >>> read_cube_file(Path("look.cube"))  # doctest: +SKIP

Text and paths never share an argument: :func:`read_cube_text` / :func:`parse_cube_text` take the
content (``str`` or ``bytes``; a one-line ``str`` is content too, never a file name), and
:func:`read_cube_file` / :func:`parse_cube_file` take a :class:`~pathlib.Path` (a ``str`` there
is a TypeError) and read at most ``max_bytes`` of a regular file.
"""

from __future__ import annotations

import io
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np

from app.ml.lut import LUT3D, MAX_SIZE, MIN_SIZE
from app.ml.paths import require_path

__all__ = [
    "CubeData",
    "CubeParseError",
    "dumps_cube",
    "parse_cube_file",
    "parse_cube_text",
    "read_cube_file",
    "read_cube_text",
    "write_cube",
]

MAX_1D_SIZE = 65536
BAKE_SIZE = 65
#: The largest magnitude accepted for a table value, domain or input range. Real grades stay far
#: below it (HDR tables reach the thousands at most); it keeps every later float32 step
#: (the table itself, interpolation differences, preview and metrics) finite, where e.g. ``1e308``
#: parses as a finite float64 but becomes infinite as float32.
MAX_ABS_VALUE = 1e6
#: :func:`parse_cube_file` reads at most this many bytes by default (a 256^3 table at 7 decimals
#: is about 0.5 GB).
MAX_FILE_BYTES = 1 << 30


class CubeParseError(ValueError):
    """A malformed ``.cube`` file; ``line`` is the 1-based line number (0 when unknown)."""

    def __init__(self, line: int, message: str) -> None:
        self.line = line
        self.reason = message
        super().__init__(f"line {line}: {message}" if line else message)


@dataclass
class CubeData:
    """The contents of a ``.cube`` file as written (before any conversion to a 3D LUT)."""

    title: str | None = None
    comments: list[str] = field(default_factory=list)
    size_3d: int | None = None
    size_1d: int | None = None
    table_3d: np.ndarray | None = None  # (N, N, N, 3) indexed [r, g, b, c]
    table_1d: np.ndarray | None = None  # (M, 3)
    domain_min: np.ndarray | None = None  # DOMAIN_MIN (Adobe)
    domain_max: np.ndarray | None = None
    range_1d: tuple[float, float] | None = None  # LUT_1D_INPUT_RANGE (Resolve)
    range_3d: tuple[float, float] | None = None  # LUT_3D_INPUT_RANGE (Resolve)

    def _domains(self) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """(1D domain, 3D domain) as (min, max) per channel."""
        zero, one = np.zeros(3), np.ones(3)
        dmin = self.domain_min if self.domain_min is not None else zero
        dmax = self.domain_max if self.domain_max is not None else one
        dom_1d = (
            (np.full(3, self.range_1d[0]), np.full(3, self.range_1d[1]))
            if self.range_1d
            else (dmin, dmax)
        )
        if self.range_3d:
            dom_3d = (np.full(3, self.range_3d[0]), np.full(3, self.range_3d[1]))
        elif self.table_1d is not None:  # with a shaper, DOMAIN_* describes the shaper's input
            dom_3d = (zero, one)
        else:
            dom_3d = (dmin, dmax)
        return dom_1d, dom_3d

    def to_lut(self, bake_size: int = BAKE_SIZE) -> LUT3D:
        """One :class:`LUT3D` for the whole file (see the module docstring for 1D tables)."""
        (min_1d, max_1d), (min_3d, max_3d) = self._domains()
        if self.table_3d is not None and self.table_1d is None:
            return LUT3D(self.table_3d, domain_min=min_3d, domain_max=max_3d, title=self.title)
        assert self.table_1d is not None
        shaper = self.table_1d
        if self.table_3d is None:
            size = shaper.shape[0] if shaper.shape[0] <= bake_size else bake_size
            ramp = np.linspace(0.0, 1.0, size)
            axes = [_interp_1d(shaper[:, c], ramp) for c in range(3)]
            r, g, b = np.meshgrid(axes[0], axes[1], axes[2], indexing="ij")
            return LUT3D(
                np.stack([r, g, b], -1), domain_min=min_1d, domain_max=max_1d, title=self.title
            )
        cube = LUT3D(self.table_3d, domain_min=min_3d, domain_max=max_3d)
        size = max(bake_size, cube.size)
        ramp = np.linspace(0.0, 1.0, size)
        axes = [_interp_1d(shaper[:, c], ramp) for c in range(3)]
        r, g, b = np.meshgrid(axes[0], axes[1], axes[2], indexing="ij")
        shaped = np.stack([r, g, b], -1).astype(np.float32)
        return LUT3D(cube.apply(shaped), domain_min=min_1d, domain_max=max_1d, title=self.title)


def _interp_1d(values: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Linear interpolation of a 1D table at normalized positions ``t`` in [0, 1]."""
    pos = np.linspace(0.0, 1.0, values.shape[0])
    return np.interp(t, pos, values.astype(np.float64))


# ---------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------
_KEYWORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER_CHARS = np.zeros(256, bool)
for _ch in b"0123456789+-.eE":
    _NUMBER_CHARS[_ch] = True
_WHITESPACE = np.zeros(256, bool)
_WHITESPACE[[9, 10, 11, 12, 13, 32]] = True
_ALLOWED_BYTES = b"0123456789+-.eE\t\n\x0b\x0c\r "


def _text_of(data: str | bytes | bytearray | memoryview) -> str:
    """The content of a ``.cube`` as text: UTF-8 (a BOM dropped), CR-only line ends made LF.

    Only content comes in here; a ``str`` is never taken for a file name (paths go through
    :func:`parse_cube_file`, which takes a :class:`~pathlib.Path`).
    """
    if isinstance(data, bytes | bytearray | memoryview):
        text = bytes(data).decode("utf-8", errors="replace")
    elif isinstance(data, str):
        text = data
    else:
        hint = " (pass a file's path to parse_cube_file)" if isinstance(data, os.PathLike) else ""
        raise TypeError(
            f"expected the .cube content as str or bytes, got {type(data).__name__}{hint}"
        )
    if text.startswith("\ufeff"):
        text = text[1:]
    if "\n" not in text and "\r" in text:
        text = text.replace("\r", "\n")
    return text


def _read_file(path: os.PathLike[str], max_bytes: int) -> bytes:
    """The bytes of the regular file ``path``, at most ``max_bytes`` (else CubeParseError).

    A ``str`` is refused (TypeError): a path must be a path object, so text can never be
    mistaken for a file name. Devices, FIFOs and directories are refused before anything is read
    (``/dev/zero`` would never end), and the read is bounded even if the file grows meanwhile.
    """
    p = require_path(path, "a .cube file")
    fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not block
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ValueError(f"{p}: not a regular file")
    with os.fdopen(fd, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise CubeParseError(0, f"{p.name}: larger than {max_bytes} bytes")
    return data


def _parse_int(tokens: list[str], lineno: int, lo: int, hi: int) -> int:
    key = tokens[0]
    if len(tokens) != 2:
        raise CubeParseError(lineno, f"{key} expects 1 integer, got {len(tokens) - 1} values")
    try:
        value = int(tokens[1])
    except ValueError:
        raise CubeParseError(lineno, f"{key} expects an integer, got {tokens[1]!r}") from None
    if not lo <= value <= hi:
        raise CubeParseError(lineno, f"{key} must be in {lo}..{hi}, got {value}")
    return value


def _parse_floats(tokens: list[str], lineno: int, count: int) -> np.ndarray:
    key = tokens[0]
    if len(tokens) - 1 != count:
        raise CubeParseError(lineno, f"{key} expects {count} numbers, got {len(tokens) - 1}")
    try:
        values = np.array([float(t) for t in tokens[1:]])
    except ValueError:
        raise CubeParseError(
            lineno, f"{key} expects numbers, got {' '.join(tokens[1:])!r}"
        ) from None
    if not np.all(np.isfinite(values)):
        raise CubeParseError(lineno, f"{key} has a NaN or infinite value")
    if not np.all(np.abs(values) <= MAX_ABS_VALUE):
        raise CubeParseError(lineno, f"{key} has a value beyond +-{MAX_ABS_VALUE:g}")
    return values


def _is_data_line(stripped: str) -> bool:
    return bool(stripped) and (stripped[0].isdigit() or stripped[0] in "+-.")


def parse_cube_text(data: str | bytes | bytearray | memoryview) -> CubeData:
    """Parse the content of a ``.cube`` file (text or UTF-8 bytes) without converting it.

    ``data`` is always content: a one-line ``str`` such as ``"/etc/passwd"`` is parsed (and
    fails) as a ``.cube``, never opened. Raises :class:`CubeParseError`; TypeError for other types.
    """
    return _parse(_text_of(data))


def parse_cube_file(path: os.PathLike[str], *, max_bytes: int = MAX_FILE_BYTES) -> CubeData:
    """Parse the ``.cube`` file at ``path`` (a :class:`~pathlib.Path`; a ``str`` is a TypeError).

    Reads at most ``max_bytes`` (a larger file is a :class:`CubeParseError`); a path that is not
    a regular file is a ValueError, a missing one an OSError.
    """
    return _parse(_text_of(_read_file(path, max_bytes)))


def _parse(text: str) -> CubeData:
    cube = CubeData()
    # -- header: keywords until the first numeric line -----------------------------------------
    pos = 0
    lineno = 0
    data_start_line = 0
    data_offset = len(text)
    seen: dict[str, int] = {}
    while pos < len(text):
        end = text.find("\n", pos)
        end = len(text) if end < 0 else end
        raw = text[pos:end]
        lineno += 1
        body = raw.split("#", 1)[0] if "#" in raw else raw
        stripped = body.strip()
        if raw.lstrip().startswith("#"):
            cube.comments.append(raw.lstrip()[1:].strip())
        elif not stripped:
            pass
        elif _is_data_line(stripped):
            data_start_line = lineno
            data_offset = pos
            break
        else:
            _header_line(cube, raw.strip(), stripped, lineno, seen)
        pos = end + 1
    if cube.size_3d is None and cube.size_1d is None:
        where = data_start_line or max(lineno, 1)
        raise CubeParseError(where, "missing LUT_3D_SIZE (or LUT_1D_SIZE) before the table data")
    rows_1d = cube.size_1d or 0
    rows_3d = (cube.size_3d or 0) ** 3
    expected = rows_1d + rows_3d
    if data_start_line == 0:
        raise CubeParseError(max(lineno, 1), f"no table data: expected {expected} rows")
    values, _ = _parse_block(text[data_offset:], data_start_line, expected, lineno_end=lineno)
    rows = values.reshape(-1, 3)
    if rows_1d:
        cube.table_1d = rows[:rows_1d].astype(np.float32)
    if cube.size_3d:
        n = cube.size_3d
        cube.table_3d = rows[rows_1d:].astype(np.float32).reshape(n, n, n, 3).transpose(2, 1, 0, 3)
    _check_domains(cube, seen)
    return cube


def _header_line(
    cube: CubeData, full: str, stripped: str, lineno: int, seen: dict[str, int]
) -> None:
    match = _KEYWORD.match(stripped)
    if not match:
        raise CubeParseError(lineno, f"expected a keyword or 3 numbers, got {stripped[:40]!r}")
    key = match.group(0)
    if key == "TITLE":
        title = full[len("TITLE") :].strip()
        if title.startswith('"'):
            close = title.find('"', 1)
            title = title[1:close] if close > 0 else title[1:]
        cube.title = title
        return
    tokens = stripped.split()
    if key in seen and key in {"LUT_3D_SIZE", "LUT_1D_SIZE", "DOMAIN_MIN", "DOMAIN_MAX"}:
        raise CubeParseError(lineno, f"{key} given twice (first on line {seen[key]})")
    seen[key] = lineno
    if key == "LUT_3D_SIZE":
        cube.size_3d = _parse_int(tokens, lineno, MIN_SIZE, MAX_SIZE)
    elif key == "LUT_1D_SIZE":
        cube.size_1d = _parse_int(tokens, lineno, 2, MAX_1D_SIZE)
    elif key == "DOMAIN_MIN":
        cube.domain_min = _parse_floats(tokens, lineno, 3)
    elif key == "DOMAIN_MAX":
        cube.domain_max = _parse_floats(tokens, lineno, 3)
    elif key in ("LUT_1D_INPUT_RANGE", "LUT_3D_INPUT_RANGE"):
        lo, hi = _parse_floats(tokens, lineno, 2)
        if not hi > lo:
            raise CubeParseError(lineno, f"{key} maximum must exceed its minimum, got {lo} {hi}")
        if key == "LUT_1D_INPUT_RANGE":
            cube.range_1d = (float(lo), float(hi))
        else:
            cube.range_3d = (float(lo), float(hi))
    elif not key.isupper():
        raise CubeParseError(lineno, f"unknown keyword {key!r}")
    # other upper-case keywords (LUT_IN_VIDEO_RANGE, ...) are ignored


def _check_domains(cube: CubeData, seen: dict[str, int]) -> None:
    if cube.domain_min is not None or cube.domain_max is not None:
        dmin = cube.domain_min if cube.domain_min is not None else np.zeros(3)
        dmax = cube.domain_max if cube.domain_max is not None else np.ones(3)
        if not np.all(dmax > dmin):
            line = seen.get("DOMAIN_MAX", seen.get("DOMAIN_MIN", 0))
            raise CubeParseError(
                line, f"DOMAIN_MAX {dmax.tolist()} must exceed DOMAIN_MIN {dmin.tolist()}"
            )


def _parse_block(
    block: str, first_line: int, expected_rows: int, lineno_end: int
) -> tuple[np.ndarray, np.ndarray]:
    """Parse the numeric block; returns (values, line number of each row)."""
    if "#" in block:  # drop comments but keep the newlines (line numbers)
        block = re.sub(r"#[^\n]*", "", block)
    encoded = block.encode("utf-8", errors="replace")
    raw = np.frombuffer(encoded, np.uint8)
    newline_pos = np.flatnonzero(raw == 10)

    def line_of(offset: np.ndarray | int) -> np.ndarray:
        return first_line + np.searchsorted(newline_pos, offset)

    # 1. characters that cannot belong to a number (text, NaN, inf, keywords after the data)
    if encoded.translate(None, _ALLOWED_BYTES):
        bad = ~(_NUMBER_CHARS[raw] | _WHITESPACE[raw])
        offset = int(np.argmax(bad))
        line = int(line_of(offset))
        start = block.rfind("\n", 0, offset) + 1
        stop = block.find("\n", offset)
        text = block[start : stop if stop >= 0 else len(block)].strip()
        token = next((t for t in text.split() if not _is_number_token(t)), text)
        if token.lower().lstrip("+-") in {"nan", "inf", "infinity"}:
            raise CubeParseError(line, f"NaN or infinite value {token!r}")
        if _KEYWORD.fullmatch(token) and token.isupper():
            raise CubeParseError(line, f"keyword {token} after the table data")
        raise CubeParseError(line, f"expected a number, got {token!r}")
    # 2. exactly 3 numbers on every non-blank line
    ws = _WHITESPACE[raw]
    starts = np.flatnonzero(~ws[1:] & ws[:-1]) + 1
    if raw.size and not ws[0]:
        starts = np.concatenate([[0], starts])
    tok_line = np.searchsorted(newline_pos, starts)
    per_line = np.bincount(tok_line, minlength=newline_pos.size + 1)
    wrong = np.flatnonzero((per_line != 0) & (per_line != 3))
    if wrong.size:
        k = int(wrong[0])
        raise CubeParseError(first_line + k, f"expected 3 numbers, got {int(per_line[k])}")
    # 3. the numbers themselves (np.fromstring stops at a malformed token such as "1.2.3")
    try:
        values = np.fromstring(block, sep=" ")
    except ValueError:
        values = np.empty(0)
    if values.size != starts.size:
        for i, tok in enumerate(block.split()):
            if not _is_number_token(tok):
                raise CubeParseError(int(line_of(starts[i])), f"expected a number, got {tok!r}")
        raise CubeParseError(0, "could not parse the table data")  # pragma: no cover
    if not np.all(np.isfinite(values)):
        i = int(np.flatnonzero(~np.isfinite(values))[0])
        raise CubeParseError(int(line_of(starts[i])), f"NaN or infinite value {values[i]!r}")
    too_big = np.abs(values) > MAX_ABS_VALUE
    if too_big.any():
        i = int(np.argmax(too_big))
        raise CubeParseError(
            int(line_of(starts[i])),
            f"value {float(values[i]):g} is out of range (at most +-{MAX_ABS_VALUE:g})",
        )
    row_lines = np.flatnonzero(per_line == 3) + first_line
    n_rows = values.size // 3
    if n_rows < expected_rows:
        missing_at = int(row_lines[-1]) + 1 if n_rows else first_line  # where the next row belongs
        raise CubeParseError(
            missing_at, f"truncated data: expected {expected_rows} rows, got {n_rows}"
        )
    if n_rows > expected_rows:
        extra = int(row_lines[expected_rows])
        raise CubeParseError(extra, f"too many data rows: expected {expected_rows}, got {n_rows}")
    return values, row_lines


def _is_number_token(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return token.lower().lstrip("+-") not in {"nan", "inf", "infinity"}


def read_cube_text(
    data: str | bytes | bytearray | memoryview, *, bake_size: int = BAKE_SIZE
) -> LUT3D:
    """A :class:`LUT3D` from the content of a ``.cube`` file (text or UTF-8 bytes).

    ``data`` is always content, never a file name (see :func:`read_cube_file`). A 1D-only or
    shaper+3D file is converted as the module docstring explains (``bake_size`` points per
    axis). Raises :class:`CubeParseError`.
    """
    return parse_cube_text(data).to_lut(bake_size)


def read_cube_file(
    path: os.PathLike[str], *, bake_size: int = BAKE_SIZE, max_bytes: int = MAX_FILE_BYTES
) -> LUT3D:
    """A :class:`LUT3D` from the ``.cube`` file at ``path``, a :class:`~pathlib.Path` (a ``str``
    is a TypeError, so that content can never be taken for a file name); see
    :func:`parse_cube_file` for the limits."""
    return parse_cube_file(path, max_bytes=max_bytes).to_lut(bake_size)


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------
def _clean_title(title: str) -> str:
    return " ".join(title.replace('"', "'").split())


def dumps_cube(
    lut: LUT3D,
    title: str | None = None,
    *,
    decimals: int = 7,
    comments: list[str] | tuple[str, ...] = (),
) -> str:
    """The ``.cube`` text for ``lut`` (Adobe Cube 1.0: TITLE, LUT_3D_SIZE, DOMAIN_MIN/MAX,
    red index fastest). ``decimals`` fixed decimals keep ``read(write(lut))`` within 1e-6."""
    if not isinstance(lut, LUT3D):
        raise TypeError(f"expected a LUT3D, got {type(lut).__name__}")
    title = title if title is not None else (lut.title or "PicFilter LUT")
    head = [f'TITLE "{_clean_title(title)}"']
    head += [f"# {' '.join(str(c).split())}" for c in comments]
    head.append(f"LUT_3D_SIZE {lut.size}")
    head.append("DOMAIN_MIN " + " ".join(_fmt_domain(v) for v in lut.domain_min))
    head.append("DOMAIN_MAX " + " ".join(_fmt_domain(v) for v in lut.domain_max))
    body = _format_rows(lut.to_cube_order().astype(np.float64), decimals)
    return "\n".join(head) + "\n" + body


def _format_rows(rows: np.ndarray, decimals: int) -> str:
    """``"%.{decimals}f %.{decimals}f %.{decimals}f\\n"`` for every row, vectorized.

    Builds the ASCII bytes with NumPy digit arithmetic (several times faster than
    ``%``-formatting a 65^3 table); falls back to ``%`` for values too large for int64 fixed
    point. Unlike ``%``, it never writes ``-0.0000000``.
    """
    flat = rows.ravel()
    if flat.size == 0 or decimals > 9 or not np.all(np.abs(flat) < 1e9):
        fmt = f"%.{decimals}f %.{decimals}f %.{decimals}f\n"
        return (fmt * rows.shape[0]) % tuple(flat.tolist())
    scale = 10**decimals
    fixed = np.rint(np.abs(flat) * scale).astype(np.int64)
    neg = (flat < 0) & (fixed != 0)
    int_part = fixed // scale
    frac_part = fixed - int_part * scale
    powers = 10 ** np.arange(1, 19, dtype=np.int64)
    n_int = 1 + np.searchsorted(powers, int_part, side="right")
    length = neg + n_int + 1 + decimals  # sign, integer digits, ".", decimals
    offsets = np.zeros(flat.size, np.int64)
    np.cumsum(length[:-1] + 1, out=offsets[1:])
    buf = np.empty(int(offsets[-1] + length[-1] + 1), np.uint8)
    ends = offsets + length
    buf[ends] = ord(" ")
    buf[ends[2::3]] = ord("\n")
    buf[offsets[neg]] = ord("-")
    start = offsets + neg
    for k in range(int(n_int.max())):
        has = n_int > k
        digit = (int_part[has] // 10**k) % 10
        buf[(start + n_int - 1 - k)[has]] = digit + 48
    dot = start + n_int
    buf[dot] = ord(".")
    rest = frac_part
    for k in range(decimals - 1, -1, -1):
        buf[dot + 1 + k] = rest % 10 + 48
        rest = rest // 10
    return buf.tobytes().decode("ascii")


def _fmt_domain(value: float) -> str:
    text = f"{float(value):.10g}"
    return text if any(ch in text for ch in ".e") else text + ".0"


def write_cube(
    lut: LUT3D,
    path: str | os.PathLike[str] | IO[str] | IO[bytes],
    title: str | None = None,
    *,
    decimals: int = 7,
) -> None:
    """Write ``lut`` as a ``.cube`` file (UTF-8, LF line endings) to a path or file object."""
    text = dumps_cube(lut, title, decimals=decimals)
    if hasattr(path, "write"):
        if isinstance(path, io.TextIOBase):
            path.write(text)
        else:
            path.write(text.encode("utf-8"))  # type: ignore[arg-type]
        return
    Path(path).write_bytes(text.encode("utf-8"))
