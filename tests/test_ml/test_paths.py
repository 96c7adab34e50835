"""Every loader in ``app.ml`` takes a file name only as a ``Path``; a ``str`` is a TypeError
(issue 9: a string meaning "a path or the content" let an upload open server files)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.ml.paths import require_path


def test_require_path() -> None:
    assert require_path(Path("a/b")) == Path("a/b")
    for bad in ("a/b", b"a/b", 3, None):
        with pytest.raises(TypeError, match="expected a pathlib.Path"):
            require_path(bad, "thing")


def test_style_and_image_loaders_refuse_a_str(shared_data: Path) -> None:
    from app.ml.imaging import load_image
    from app.ml.learn import load_style, load_style_bytes, read_style_checkpoint

    cube = shared_data / "luts" / "classic_film.cube"
    assert load_style(cube).kind == "imported"
    with pytest.raises(TypeError, match="got str"):
        load_style(str(cube))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="got str"):
        read_style_checkpoint(str(cube))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="as bytes, got str"):
        load_style_bytes(str(cube))  # type: ignore[arg-type]
    photo = shared_data / "photos" / "tahoe-gps.jpg"
    assert load_image(photo, max_pixels=10**9)[0].ndim == 3
    with pytest.raises(TypeError, match="got str"):
        load_image(str(photo))  # type: ignore[arg-type]


def test_published_weight_loaders_refuse_a_str(shared_data: Path) -> None:
    from app.ml.adaptive_3dlut import load_published
    from app.ml.nilut import load_published_nilut

    with pytest.raises(TypeError, match="got str"):
        load_published(str(shared_data / "models" / "adaptive_3dlut"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="got str"):
        load_published_nilut(  # type: ignore[arg-type]
            str(shared_data / "models" / "nilut" / "nilutx3style.pt")
        )


def test_service_image_opener_refuses_a_str(tmp_path: Path) -> None:
    from app.ml.imaging import open_image

    with pytest.raises(TypeError, match="got str"):
        open_image(str(tmp_path / "x.jpg"), "jpeg", 10**6)  # type: ignore[arg-type]
