"""The published weights ship inside the package (app.ml.weights) and load by default."""

from __future__ import annotations

import fnmatch
import hashlib
import re
import tomllib
from pathlib import Path

import pytest

from app.ml import weights

ROOT = Path(__file__).resolve().parents[2]
FILES = {
    "adaptive_3dlut/LUTs.pth": "c1bb2bc4b7239c1a7e96159f5923123ba796b1fceb0b8c3132b423ea825b821a",
    "adaptive_3dlut/classifier.pth": (
        "bae9865395625ecae58cfe86147e521093bb1e29e7b2544e02adb238b8035021"
    ),
    "nilut/nilutx3style.pt": "4daf5cc8764c05c26c22bde6063ec168394d067cebc957c2e1a6dae6b0e4eac4",
}


@pytest.mark.parametrize(("name", "sha256"), FILES.items())
def test_packaged_files_are_the_published_ones(name: str, sha256: str) -> None:
    data = (weights.PACKAGED / name).read_bytes()
    assert hashlib.sha256(data).hexdigest() == sha256
    notice = (weights.PACKAGED / "NOTICE.md").read_text()
    assert sha256 in notice


def test_notice_names_sources_and_licences() -> None:
    notice = (weights.PACKAGED / "NOTICE.md").read_text()
    for needle in ("HuiZeng/Image-Adaptive-3DLUT", "Apache License 2.0", "mv-lab/nilut", "MIT"):
        assert needle in notice


def test_every_packaged_file_is_declared_as_package_data() -> None:
    """A file the globs miss would be in the checkout but not in an installed wheel."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["app.ml.weights"]
    data = [
        p.relative_to(weights.PACKAGED).as_posix()
        for p in weights.PACKAGED.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc")
    ]
    assert sorted(data) == sorted([*FILES, "NOTICE.md"])
    for name in data:
        assert any(fnmatch.fnmatch(name, g) for g in globs), name


def test_loaders_default_to_the_packaged_copy() -> None:
    from app.ml.adaptive_3dlut import load_published
    from app.ml.nilut import load_published_nilut

    explicit = load_published(weights.adaptive_3dlut_dir())
    default = load_published()
    assert default.net.luts.shape == (3, 3, 33, 33, 33)
    assert bool((default.net.luts == explicit.net.luts).all())
    nilut = load_published_nilut()
    assert nilut.style_names == load_published_nilut(weights.nilut_checkpoint()).style_names
    assert len(nilut.style_names) == 3


def test_no_module_of_app_reaches_outside_the_checkout_for_weights() -> None:
    pattern = re.compile(r"parents\[3\]|\.\./shared|shared/data")
    hits = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in (ROOT / "app").rglob("*.py")
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert hits == []
