"""One rule for every loader in ``app.ml``: a file name is a ``Path``, never a ``str``.

Loaders that once took "a path or the content" in one ``str`` could be made to open server files
by anyone who controls the content (an uploaded ``.cube`` reading ``/etc/passwd``). Now content
arrives as ``str``/``bytes`` through functions named for content, and file names arrive as
``os.PathLike`` through functions named for files; :func:`require_path` refuses a ``str`` (or
``bytes``) where a path is expected, so a caller has to say which one it holds.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["require_path"]


def require_path(value: object, what: str = "path") -> Path:
    """``value`` as a :class:`Path` if it is an ``os.PathLike``; a ``str``/``bytes``/other is a
    TypeError naming ``what`` (the CLI and tests wrap user-given names in ``Path`` themselves)."""
    if isinstance(value, str | bytes) or not isinstance(value, os.PathLike):
        raise TypeError(
            f"{what}: expected a pathlib.Path, got {type(value).__name__} (a str is never taken "
            "for a file name; wrap a real file name in Path, or pass content to the *_text/"
            "*_bytes loader)"
        )
    return Path(value)
