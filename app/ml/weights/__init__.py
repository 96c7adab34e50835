"""The published weights that ship inside the package (sources and licences: ``NOTICE.md``).

``PACKAGED`` is the folder of this package; a weights folder (this one, or one a setting names)
holds ``adaptive_3dlut/LUTs.pth`` + ``adaptive_3dlut/classifier.pth`` (Image-Adaptive-3DLUT,
Apache-2.0) and ``nilut/nilutx3style.pt`` (NILUT, MIT). The loaders
(:func:`app.ml.adaptive_3dlut.load_published`, :func:`app.ml.nilut.load_published_nilut`) read
these by default; a caller that wants other files passes their ``Path``. Nothing here reads the
environment: the service's ``PUBLISHED_WEIGHTS_DIR`` setting is passed down by the worker.

>>> adaptive_3dlut_dir().name, nilut_checkpoint().name
('adaptive_3dlut', 'nilutx3style.pt')
>>> (adaptive_3dlut_dir() / "LUTs.pth").is_file()
True
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["PACKAGED", "adaptive_3dlut_dir", "nilut_checkpoint"]

PACKAGED = Path(__file__).resolve().parent


def adaptive_3dlut_dir(root: Path | None = None) -> Path:
    """The image-adaptive 3D LUT weights folder (``LUTs.pth`` + ``classifier.pth``) under
    ``root`` (default: the packaged copy)."""
    return (root if root is not None else PACKAGED) / "adaptive_3dlut"


def nilut_checkpoint(root: Path | None = None) -> Path:
    """The conditional NILUT checkpoint under ``root`` (default: the packaged copy)."""
    return (root if root is not None else PACKAGED) / "nilut" / "nilutx3style.pt"
