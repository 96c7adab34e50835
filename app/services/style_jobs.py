"""Styles (worker side): the learn, apply and export jobs, and the storage work of import/fork.

Synchronous code run by the ``ml`` Celery tasks (:mod:`app.workers.ml_tasks`) through
:func:`app.services.job_service.run_job`, and by the API in a thread for import and fork.

Consistency rules (see :mod:`app.services.style_service` for the versioned keys):

* a learn job writes its objects under ``styles/{id}/v{n}/`` and publishes them with one
  conditional UPDATE (``WHERE model_version = n``); if that matches no row the style was deleted
  or re-learned meanwhile, and the job deletes what it wrote; after publishing it deletes the
  previous version's objects (an apply that still held the old keys re-reads the row);
* apply and export write their output, then touch the style row with an UPDATE (apply:
  ``apply_count = apply_count + 1``). The UPDATE waits for a concurrent ``DELETE`` of the style
  to commit; if the row is gone the job removes its output and fails with "style deleted".
  Together with the API deleting the style's objects while holding the row, no object outlives
  its style;
* a failed or cancelled learn sets the style back (``ready`` if it still has a model, else
  ``failed``) through the ``on_fail`` hook, only if the style still belongs to that learn.

Learned models are cached per worker process, keyed by ``(style_id, model_version, model_key)``
(a small LRU), so repeated applies and exports do not re-download and re-parse them.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from sqlalchemy import select, update

from app.config import Settings
from app.db import SyncDatabase
from app.ml import imaging
from app.models import Image as ImageRow
from app.models import Style, StyleModelKind, StyleStatus
from app.models.base import utcnow
from app.services.job_service import JobContext, JobSuperseded, PermanentJobError
from app.services.style_rules import (
    export_filename,
    learn_stop_reason,
    public_metrics,
    settle_learn_update,
    slugify,
)
from app.storage import StorageObjectNotFound, make_storage
from app.storage.keys import content_name, cube_key, is_immutable, result_key, style_key

if TYPE_CHECKING:
    from app.ml.base import StyleModel
    from app.ml.lut import LUT3D
    from app.storage import Storage

log = logging.getLogger("picfilter.styles")

# Learning sees every image with its long side at most this many pixels (the ML core's default
# working size; the ``working_size`` option may ask for up to MAX_LEARN_SIDE): a look is made of
# colors, not detail, and 16 full-size photos would not fit in memory.
LEARN_SIDE = 1200
MAX_LEARN_SIDE = 4096
DEFAULT_QUALITY = 92
FORMAT_EXT = {"jpeg": "jpg", "png": "png", "webp": "webp", "tiff": "tif", "heic": "heic"}
FORMAT_CONTENT_TYPE = {
    "jpeg": "image/jpeg",
    "png": "image/png",
    "webp": "image/webp",
    "tiff": "image/tiff",
    "heic": "image/heic",
}
STYLE_DELETED = "style deleted"
# An imported table larger than this (a HaldCLUT above level 8) is resampled to it: the style's
# ``lut.cube``, ``model.pt`` and browser preview stay the size of a 65^3 ``.cube``.
MAX_IMPORT_POINTS = 65


# ---- per-process resources ------------------------------------------------------------------
_storage: tuple[int, Storage] | None = None


def worker_storage(settings: Settings) -> Storage:
    """The storage of this worker process (boto3 clients are not shared across fork)."""
    global _storage
    if _storage is None or _storage[0] != os.getpid():
        _storage = (os.getpid(), make_storage(settings))
    return _storage[1]


class ModelCache:
    """A small LRU of loaded style models keyed by ``(style_id, model_version, model_key)``."""

    def __init__(self, capacity: int = 8) -> None:
        self.capacity = capacity
        self._items: OrderedDict[tuple[str, int, str], StyleModel] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[str, int, str], load: Callable[[], StyleModel]) -> StyleModel:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
        model = load()
        with self._lock:
            self.misses += 1
            self._items[key] = model
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return model

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


MODEL_CACHE = ModelCache()


def version_key(style_id: uuid.UUID | str, version: int, name: str) -> str:
    """``styles/{id}/v{n}/{name}``: where version ``n`` of a style keeps ``name``."""
    return style_key(style_id, f"v{version}/{name}")


def delete_keys(storage: Storage, keys: list[str | None]) -> None:
    for key in keys:
        if key:
            try:
                storage.delete(key)
            except Exception:  # best effort; the style's prefix is removed with the style
                log.warning("could not delete %s", key, exc_info=True)


# ---- images ---------------------------------------------------------------------------------
def load_upright(data: bytes, what: str) -> tuple[np.ndarray, bytes | None]:
    """An upright (EXIF orientation applied) RGB array for learning (uint16 for 16-bit PNG /
    TIFF, else uint8) and its ICC profile (see :func:`in_working_space`)."""
    try:
        pixels, info = imaging.load_image(data, apply_orientation=True, keep_16bit=True)
    except ValueError as exc:
        raise PermanentJobError(f"{what}: {exc}") from exc
    return pixels, info.icc_profile


def in_working_space(pixels: np.ndarray, icc: bytes | None, what: str) -> np.ndarray:
    """Learning pixels converted into the style's working space (sRGB; nothing to do for sRGB
    and untagged images). Done after the resize to the learning size: cheaper, and a same-size
    pair is resized by picking pixels, which commutes with a per-pixel conversion."""
    try:
        return imaging.to_working(pixels, icc)
    except ValueError as exc:
        raise PermanentJobError(f"{what}: {exc}") from exc


def learning_pair(
    before: np.ndarray, after: np.ndarray, long_side: int, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`app.ml.imaging.learning_pair`; a pair it refuses fails the job for good."""
    try:
        return imaging.learning_pair(before, after, long_side)
    except ValueError as exc:
        raise PermanentJobError(f"{what}: {exc}") from exc


# ---- model bytes ----------------------------------------------------------------------------
def _load_model_bytes(data: bytes) -> StyleModel:
    from app.ml.learn import load_style_bytes

    return load_style_bytes(data)


def load_style_model(storage: Storage, style: Style) -> StyleModel:
    """The style's model (cached per process); raises StorageObjectNotFound if it is gone."""
    key = style.model_key
    if not key:
        raise PermanentJobError("the style has no model")
    return MODEL_CACHE.get(
        (str(style.id), style.model_version, key), lambda: _load_model_bytes(storage.get_bytes(key))
    )


def _read_style(ctx: JobContext, style_id: uuid.UUID) -> Style:
    with ctx.db.session() as s:
        style = s.get(Style, style_id)
        if style is None:
            raise PermanentJobError(STYLE_DELETED)
        s.expunge(style)
    return style


def _model_for_job(
    ctx: JobContext, storage: Storage, style_id: uuid.UUID
) -> tuple[Style, StyleModel]:
    """Read the style row and its model; if a re-learn replaced the model between the read and
    the download (old objects deleted), read the row again."""
    for attempt in range(3):
        style = _read_style(ctx, style_id)
        try:
            return style, load_style_model(storage, style)
        except StorageObjectNotFound:
            if attempt == 2:
                raise
            time.sleep(0.05)
    raise AssertionError("unreachable")


def _touch_style(ctx: JobContext, style_id: uuid.UUID, *, count_apply: bool) -> bool:
    """UPDATE the style row (waits for a concurrent delete to commit); False if it is gone."""
    values: dict[str, Any] = {"updated_at": Style.updated_at}
    if count_apply:
        values["apply_count"] = Style.apply_count + 1
    else:
        values["model_version"] = Style.model_version
    with ctx.db.session() as s:
        res = s.execute(
            update(Style)
            .where(Style.id == style_id)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        return getattr(res, "rowcount", 0) == 1


# ---- learn ----------------------------------------------------------------------------------
class _Progress:
    """Maps the ML core's 0..1 progress to ``lo..hi`` percent, writing at most every 0.5 s."""

    def __init__(self, ctx: JobContext, lo: float, hi: float) -> None:
        self.ctx, self.lo, self.hi = ctx, lo, hi
        self._last = 0.0

    def __call__(self, fraction: float, message: str = "") -> None:
        now = time.monotonic()
        if now - self._last < 0.5 and fraction < 1.0:
            return
        self._last = now
        f = min(1.0, max(0.0, float(fraction)))
        self.ctx.progress(self.lo + (self.hi - self.lo) * f, message)


def _image_row(ctx: JobContext, image_id: str, what: str) -> ImageRow:
    with ctx.db.session() as s:
        row = s.get(ImageRow, uuid.UUID(image_id))
        if row is None or row.owner_id != ctx.owner_id:
            raise PermanentJobError(f"{what}: image {image_id} was deleted")
        s.expunge(row)
    return row


def _requested_kind(model_name: str) -> StyleModelKind:
    """The style's model label when the learned kind has none (a references-only transfer):
    the model asked for, and ``dlut`` (a LUT) for ``auto``."""
    if model_name in StyleModelKind.__members__:
        return StyleModelKind(model_name)
    return StyleModelKind.dlut


def learn(ctx: JobContext, init_weights: str | None = None) -> dict[str, Any]:
    """The ``learn_style`` job: load the images, learn, store, publish (see the module doc).

    ``init_weights``: the published starting weights of ``adaptive_3dlut`` (the worker's model
    registry), if any.
    """
    from app.ml import LearnInputError, dumps_cube, learn_style, save_style_bytes
    from app.ml.learn import DEFAULT_TIME_BUDGET_S
    from app.ml.options import OptionsError, validate_options

    p = ctx.params
    style_id = uuid.UUID(p["style_id"])
    version = int(p["model_version"])
    model_name = str(p.get("model", "dlut"))
    storage = worker_storage(ctx.settings)
    style = _read_style(ctx, style_id)
    if style.model_version != version:
        raise PermanentJobError("superseded by a newer learn request")
    try:  # the API checked them; a job queued by an older server may still carry bad ones
        options = validate_options(model_name, p.get("options") or {}, paired=bool(p.get("pairs")))
    except OptionsError as exc:
        raise PermanentJobError(f"cannot learn with these options: {exc}") from exc
    # the caller may ask for more or less than the default (one minute), never for more than
    # the server's budget
    budget = min(
        ctx.settings.ml_learn_time_budget_seconds,
        max(1.0, float(options.get("time_budget_s", DEFAULT_TIME_BUDGET_S))),
    )
    long_side = min(MAX_LEARN_SIDE, max(64, int(options.get("working_size") or LEARN_SIDE)))

    ctx.progress(1, "loading images")
    pair_ids = list(p.get("pairs", []))
    ref_ids = list(p.get("references", []))
    total = max(1, len(pair_ids) + len(ref_ids))
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    for i, pair in enumerate(pair_ids):
        fields = (f"pairs[{i}].before_image_id", f"pairs[{i}].after_image_id")
        rows = [
            _image_row(ctx, pair[k], f) for k, f in zip(("before", "after"), fields, strict=True)
        ]
        (before, before_icc), (after, after_icc) = (
            load_upright(_get(storage, row.storage_key, f), f)
            for row, f in zip(rows, fields, strict=True)
        )
        before, after = learning_pair(before, after, long_side, f"pairs[{i}]")
        pairs.append(
            (
                in_working_space(before, before_icc, fields[0]),
                in_working_space(after, after_icc, fields[1]),
            )
        )
        ctx.progress(1 + 4 * (i + 1) / total, "loading images")
    references: list[np.ndarray] = []
    for i, ref_id in enumerate(ref_ids):
        what = f"reference_image_ids[{i}]"
        ref, ref_icc = load_upright(
            _get(storage, _image_row(ctx, ref_id, what).storage_key, what), what
        )
        ref = imaging.box(ref, imaging.capped(ref.shape, long_side))
        references.append(in_working_space(ref, ref_icc, what))
        ctx.progress(1 + 4 * (len(pairs) + i + 1) / total, "loading images")

    ctx.progress(5, "learning")
    try:
        result = learn_style(
            model_name,
            pairs=pairs,
            references=references,
            options=options,
            time_budget_s=budget,
            progress=_Progress(ctx, 5, 90),
            device=ctx.settings.ml_device,
            init_weights=init_weights if model_name in ("adaptive_3dlut", "auto") else None,
        )
    except OptionsError as exc:
        raise PermanentJobError(f"cannot learn with these options: {exc}") from exc
    except LearnInputError as exc:
        raise PermanentJobError(f"cannot learn from these images: {exc}") from exc
    except ValueError as exc:  # a model option the options model lets through but a fit refuses
        raise PermanentJobError(f"cannot learn with these options: {exc}") from exc
    ctx.progress(90, "saving the model")

    model = result.model
    metrics = _plain_metrics(result.metrics)
    metrics["working_space"] = imaging.WORKING_SPACE
    kind = StyleModelKind(model.kind) if model.kind in StyleModelKind.__members__ else None
    meta = {
        "style_id": str(style_id),
        "model_version": version,
        "name": style.name,
        "working_space": imaging.WORKING_SPACE,
    }
    sample = imaging.as_uint8(pairs[0][0]) if pairs else imaging.color_chart()
    preview = imaging.side_by_side(sample, model.apply(sample, 1.0))
    del pairs, references
    lut: LUT3D = result.lut
    lut_text = dumps_cube(
        lut,
        title=f"{style.name} (PicFilter {model.kind}, {lut.size}^3)",
        comments=[f"style {style_id} version {version}"],
    )
    keys = {
        "model_key": version_key(style_id, version, "model.pt"),
        "lut_key": version_key(style_id, version, "lut.cube"),
        "preview_key": version_key(style_id, version, content_name("preview", preview, "webp")),
    }
    written: list[str | None] = []
    try:
        storage.put_bytes(
            keys["model_key"], save_style_bytes(model, metrics, meta), "application/octet-stream"
        )
        written.append(keys["model_key"])
        storage.put_bytes(keys["lut_key"], lut_text.encode("utf-8"), "text/plain")
        written.append(keys["lut_key"])
        storage.put_bytes(keys["preview_key"], preview, "image/webp")
        written.append(keys["preview_key"])
        ctx.check_cancelled()
        old = _publish(ctx, style_id, version, keys, metrics, kind or _requested_kind(model_name))
    except BaseException as exc:
        # a superseded attempt leaves the keys alone: the attempt that took over writes them too
        if not isinstance(exc, JobSuperseded):
            delete_keys(storage, written)
        raise
    delete_keys(storage, [k for k in old if k and k not in keys.values()])
    return {
        "style_id": str(style_id),
        "model": model.kind,
        "model_version": version,
        "metrics": public_metrics(metrics),
    }


def _get(storage: Storage, key: str, what: str) -> bytes:
    try:
        return storage.get_bytes(key)
    except StorageObjectNotFound as exc:
        raise PermanentJobError(f"{what}: the image's file is gone") from exc


def _plain_metrics(value: Any) -> Any:
    """JSON-safe metrics: NumPy scalars to Python, non-finite floats to None."""
    if isinstance(value, dict):
        return {str(k): _plain_metrics(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain_metrics(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return str(value)


def _publish(
    ctx: JobContext,
    style_id: uuid.UUID,
    version: int,
    keys: dict[str, str],
    metrics: dict[str, Any],
    kind: StyleModelKind | None,
) -> list[str | None]:
    """Switch the style to the new objects if it is still at ``version``; returns the old keys."""
    with ctx.db.session() as s:
        old = s.execute(
            select(Style.model_key, Style.lut_key, Style.preview_key).where(Style.id == style_id)
        ).one_or_none()
        res = s.execute(
            update(Style)
            .where(Style.id == style_id, Style.model_version == version)
            .values(
                status=StyleStatus.ready,
                model=kind,
                metrics=metrics,
                error=None,
                updated_at=utcnow(),
                **keys,
            )
            .execution_options(synchronize_session=False)
        )
        if getattr(res, "rowcount", 0) != 1:
            exists = s.execute(select(Style.id).where(Style.id == style_id)).first()
            raise PermanentJobError(
                "superseded by a newer learn request" if exists else STYLE_DELETED
            )
    return list(old) if old else []


def on_learn_fail(ctx: JobContext, message: str) -> None:
    """Set the style back after a failed or cancelled learn (the worker's failure hook)."""
    settle_learn(ctx.db, ctx.params, message)


def settle_learn(db: SyncDatabase, params: dict[str, Any], message: str) -> None:
    """Set the style of a learn job that ended without a model back (the rule of
    :func:`app.services.style_rules.settle_learn_update`, as the API side applies it). Called
    by the worker's failure hook and by the stuck-job sweep."""
    cancelled = message == "cancelled"
    reason = learn_stop_reason(None if cancelled else message, cancelled=cancelled)
    with db.session() as s:
        s.execute(
            settle_learn_update(uuid.UUID(params["style_id"]), int(params["model_version"]), reason)
        )


# ---- apply ----------------------------------------------------------------------------------
def apply(ctx: JobContext) -> dict[str, Any]:
    """The ``apply_style`` job: full resolution, strength, format/quality, graded in the working
    space (:func:`app.ml.imaging.grade`). The result keeps the source's color space and ICC
    profile (``output_profile: "srgb"`` converts it to sRGB), 16 bits for 16-bit PNG / TIFF
    written as PNG / TIFF, and the EXIF (GPS removed); its pixels are upright, orientation 1."""
    from app.ml.imaging import encode_image, grade, load_image, output_format, strip_gps

    p = ctx.params
    style_id = uuid.UUID(p["style_id"])
    storage = worker_storage(ctx.settings)
    image = _image_row(ctx, p["image_id"], "image_id")
    style, model = _model_for_job(ctx, storage, style_id)
    ctx.progress(10, "decoding")
    try:
        pixels, info = load_image(
            storage.get_bytes(image.storage_key),
            apply_orientation=True,
            max_pixels=ctx.settings.max_image_pixels,
            keep_16bit=True,
        )
    except StorageObjectNotFound as exc:
        raise PermanentJobError("the image's file is gone") from exc
    except ValueError as exc:
        raise PermanentJobError(f"the image cannot be decoded: {exc}") from exc
    ctx.progress(30, "applying")
    output_profile = str(p.get("output_profile") or "source")
    if output_profile not in imaging.OUTPUT_PROFILES:  # the API checked it
        raise PermanentJobError(f"cannot apply: unknown output_profile {output_profile!r}")
    try:
        graded, icc = grade(
            model,
            pixels,
            info.icc_profile,
            float(p.get("strength", 1.0)),
            cast("imaging.OutputProfile", output_profile),
        )
    except ValueError as exc:  # an ICC profile LittleCMS cannot convert with
        raise PermanentJobError(f"cannot apply: {exc}") from exc
    fmt = output_format(p.get("format"), info.format)
    coverage = _coverage(style, pixels, info.icc_profile)
    ctx.progress(60, "encoding")
    data = encode_image(
        graded,
        fmt,
        int(p.get("quality") or DEFAULT_QUALITY),
        icc,
        strip_gps(info.exif),
        alpha=info.alpha,
    )
    height, width = graded.shape[:2]
    bits = 16 if graded.dtype == np.uint16 and fmt in imaging.SIXTEEN_BIT_FORMATS else 8
    del pixels, graded
    key = result_key(ctx.owner_id, ctx.job_id, FORMAT_EXT[fmt], data)
    storage.put_bytes(key, data, FORMAT_CONTENT_TYPE[fmt])
    try:
        ctx.check_cancelled()
        if not _touch_style(ctx, style_id, count_apply=True):
            raise PermanentJobError(STYLE_DELETED)
    except BaseException:
        delete_keys(storage, [key])
        raise
    stem = os.path.splitext(image.filename or "image")[0][:80] or "image"
    filename = f"{slugify(stem)}_{slugify(style.name)}.{FORMAT_EXT[fmt]}"
    return {
        "result_url": storage.presign_get(key, expires_in=RESULT_URL_TTL, filename=filename),
        "result_key": key,
        # the download name (a CDN result URL carries none: see app/storage/s3.py)
        "filename": filename,
        "width": width,  # as displayed: the pixels are upright
        "height": height,
        "format": fmt,
        "bytes": len(data),
        "orientation": 1,
        "bits": bits,
        "color_profile": imaging.describe_profile(icc),
        "output_profile": output_profile,
        "style_model_version": style.model_version,
        "coverage": coverage,
    }


def _coverage(style: Style, pixels: np.ndarray, icc: bytes | None) -> dict[str, Any] | None:
    """How much of the photo's colors the style was taught (its ``metrics.coverage``, written
    by learning; imported LUTs and reference-only styles have none): the share of the photo's
    pixels, in the working space, whose colors none of its training photos showed. ``None``
    when the style has no record or it cannot be read (the graded photo is still delivered)."""
    from app.ml.coverage import ColorCoverage

    record = (style.metrics or {}).get("coverage")
    if not isinstance(record, dict):
        return None
    try:
        share = ColorCoverage.from_dict(record).photo_unseen_share(pixels, icc)
    except ValueError:
        return None
    return {
        "unseen_share": share,
        "what": "share of this photo's pixels whose colors none of the style's training photos "
        "showed: there the look is extrapolated; a pair showing those colors would teach it",
    }


# Presigned result/download URLs are stored in the job row; they stay valid this long.
RESULT_URL_TTL = 24 * 3600


# ---- export ---------------------------------------------------------------------------------
def export(ctx: JobContext) -> dict[str, Any]:
    """The ``export_cube`` job: bake the model and write ``cubes/{style}/{job}.{ext}`` in the
    requested format (``cube``, ``haldclut``, ``3dl``, ``spi3d``, ``csp``, ``icc``; writers in
    :mod:`app.ml.lut_formats`).

    The precision rule: a style that is a LUT itself (imported, dlut, transfer) is never written
    at more points per axis than its own table, since that would only resample it. A larger
    ``size`` is exported at the table's size, and the result says so (``requested_size``,
    ``note``). A HaldCLUT's lattice is fixed by its level, so one above the table's size is a
    resampling, stated by ``source_size`` and ``note``.
    """
    from app.ml.lut_formats import export_lut, hald_points, source_size

    p = ctx.params
    style_id = uuid.UUID(p["style_id"])
    fmt = str(p.get("format") or "cube")
    requested = int(p.get("size", 33))
    level = int(p["level"]) if fmt == "haldclut" else None
    storage = worker_storage(ctx.settings)
    style, model = _model_for_job(ctx, storage, style_id)
    own = source_size(model)
    note = None
    if level is not None:
        size = hald_points(level)
        if own is not None and size > own:
            note = (
                f"the style is a {own}^3 table; this level {level} HaldCLUT ({size}^3) holds it "
                "resampled by trilinear interpolation, with no added precision"
            )
    elif own is not None and requested > own:
        size = own
        note = (
            f"exported at {own}^3, the size of the style's own table: {requested}^3 would only "
            "resample it"
        )
    else:
        size = requested
    lut = model.bake(size)
    kind = style.model.value if style.model else "style"
    title = f"{style.name} - PicFilter {kind} {size}^3"
    comments = [
        f"PicFilter style {style.id}",
        "Adobe Cube 1.0: LUT_3D_SIZE, DOMAIN_MIN/MAX, red index changes fastest"
        if fmt == "cube"
        else f"{size} points per axis",
    ]
    if style.model == StyleModelKind.adaptive_3dlut:
        comments.append("image-adaptive style: basis weights averaged over its training images")
    if note:
        comments.append(note)
    exported = export_lut(lut, fmt, title=title, comments=comments)
    key = cube_key(style_id, ctx.job_id, exported.ext)
    storage.put_bytes(key, exported.data, exported.content_type)
    try:
        if not _touch_style(ctx, style_id, count_apply=False):
            raise PermanentJobError(STYLE_DELETED)
    except BaseException:
        delete_keys(storage, [key])
        raise
    filename = export_filename(style.name, fmt, size, level)
    result: dict[str, Any] = {
        "download_url": storage.presign_get(key, expires_in=RESULT_URL_TTL, filename=filename),
        "size": size,
        "filename": filename,
        "format": fmt,
        "bytes": len(exported.data),
    }
    if level is not None:
        result["level"] = level
    if own is not None and size != own:
        result["source_size"] = own
    if size != requested and level is None:
        result["requested_size"] = requested
    if note:
        result["note"] = note
    return result


# ---- import / fork (called by the API in a thread) ------------------------------------------
@dataclass
class StoredObjects:
    model_key: str
    lut_key: str
    preview_key: str
    metrics: dict[str, Any] | None = None


def store_imported_cube(
    storage: Storage, style_id: uuid.UUID, data: bytes, filename: str, name: str
) -> StoredObjects:
    """Parse an uploaded ``.cube``, HaldCLUT PNG or ``.3dl`` (raises CubeParseError,
    LUTFormatError or UnicodeDecodeError) and store model, LUT and chart preview (v1).

    A table of more than :data:`MAX_IMPORT_POINTS` points per axis (a HaldCLUT above level 8)
    is resampled to that size, and the style's info says so (``resampled_from``)."""
    from app.ml.cube_export import dumps_cube
    from app.ml.learn import save_style_bytes
    from app.ml.lut import LUTStyle
    from app.ml.lut_formats import detect_format, read_lut_bytes

    # the upload's content, always parsed as content: never a file name (see read_lut_bytes)
    kind = detect_format(data, filename)
    if kind != "haldclut":
        data.decode("utf-8-sig")  # text formats: a UnicodeDecodeError says "not text"
    lut = read_lut_bytes(data, filename)
    info: dict[str, Any] = {"filename": filename, "title": lut.title or "", "format": kind}
    if lut.size > MAX_IMPORT_POINTS:
        info["resampled_from"] = lut.size
        lut = lut.resample(MAX_IMPORT_POINTS)
    model = LUTStyle(lut, kind="imported", info=info)
    chart = imaging.color_chart()
    preview = imaging.side_by_side(chart, model.apply(chart, 1.0))
    meta = {"style_id": str(style_id), "model_version": 1, "name": name, "source": filename}
    objects = StoredObjects(
        model_key=version_key(style_id, 1, "model.pt"),
        lut_key=version_key(style_id, 1, "lut.cube"),
        preview_key=version_key(style_id, 1, content_name("preview", preview, "webp")),
    )
    written: list[str | None] = []
    try:
        storage.put_bytes(
            objects.model_key, save_style_bytes(model, {}, meta), "application/octet-stream"
        )
        written.append(objects.model_key)
        text = dumps_cube(lut, title=lut.title or name, comments=[f"imported from {filename}"])
        storage.put_bytes(objects.lut_key, text.encode("utf-8"), "text/plain")
        written.append(objects.lut_key)
        storage.put_bytes(objects.preview_key, preview, "image/webp")
        written.append(objects.preview_key)
    except BaseException:
        delete_keys(storage, written)
        raise
    return objects


def copy_style_objects(
    storage: Storage, new_style_id: uuid.UUID, keys: dict[str, str | None]
) -> dict[str, str]:
    """Copy a style's current objects to version 1 of ``new_style_id`` (server-side copies)."""
    names = {"model": "model.pt", "lut": "lut.cube", "preview": "preview.webp"}
    out: dict[str, str] = {}
    try:
        for what, src in keys.items():
            if not src:
                continue
            # a content-addressed preview keeps its name (same bytes, same address)
            name = src.rsplit("/", 1)[-1] if is_immutable(src) else names[what]
            dst = version_key(new_style_id, 1, name)
            storage.copy(src, dst)
            out[what] = dst
    except BaseException:
        delete_keys(storage, list(out.values()))
        raise
    return out
