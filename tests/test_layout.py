"""The layering rules of ``DESIGN.md``, checked on the source (``ast``, no imports executed).

* ``app/services`` holds business rules only: no module there imports the web framework
  (FastAPI, Starlette), the S3 client (boto3, botocore) or the image library (Pillow), not even
  lazily inside a function or under ``TYPE_CHECKING``; those belong to ``app/api``,
  ``app/storage`` and ``app/ml``.
* ``app/ml`` is a plain library: it imports nothing from the rest of ``app``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[1] / "app"
SERVICES_MAY_NOT_IMPORT = {"fastapi", "starlette", "boto3", "botocore", "PIL"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(APP.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, source: str | None = None) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path``, at any depth: module level,
    inside functions and ``if TYPE_CHECKING:``, and ``importlib.import_module("...")`` /
    ``__import__("...")`` with a literal name. Relative imports are resolved against ``path``'s
    place in ``app``; ``from m import x`` is reported as ``m.x``. ``source`` replaces the file's
    text (to test the scanner itself)."""
    text = path.read_text(encoding="utf-8") if source is None else source
    tree = ast.parse(text, filename=str(path))
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            for alias in node.names:
                yield node.lineno, f"{module}.{alias.name}"
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if (
                name in ("import_module", "__import__")
                and isinstance(first, ast.Constant)
                and isinstance(first.value, str)
            ):
                yield node.lineno, first.value


def _modules(folder: str) -> list[Path]:
    found = sorted((APP / folder).rglob("*.py"))
    assert found, f"no modules under app/{folder}"
    return found


def test_the_import_scanner_sees_lazy_relative_and_dynamic_imports() -> None:
    """The checks below can fail: every form of import is found and resolved."""
    source = (
        "import os\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from PIL import Image\n"
        "def f():\n    import fastapi.responses\n    from .. import errors\n"
        "    from .store import x\n"
        "    import importlib\n    importlib.import_module('boto3')\n"
    )
    found = {name for _, name in imports(APP / "services" / "probe.py", source)}
    assert found >= {
        "os",
        "PIL.Image",
        "fastapi.responses",
        "app.errors",
        "app.services.store.x",
        "boto3",
    }, found


@pytest.mark.parametrize("path", _modules("services"), ids=lambda p: p.name)
def test_services_import_no_web_s3_or_image_library(path: Path) -> None:
    bad = [
        f"{path.relative_to(APP.parent)}:{line}: {name}"
        for line, name in imports(path)
        if name.split(".")[0] in SERVICES_MAY_NOT_IMPORT
    ]
    assert not bad, "app/services must not import " + ", ".join(bad)


@pytest.mark.parametrize("path", _modules("ml"), ids=lambda p: str(p.relative_to(APP / "ml")))
def test_ml_imports_nothing_from_the_rest_of_app(path: Path) -> None:
    bad = [
        f"{path.relative_to(APP.parent)}:{line}: {name}"
        for line, name in imports(path)
        if (name == "app" or name.startswith("app.")) and not name.startswith("app.ml")
    ]
    assert not bad, "app/ml is a plain library; it imports " + ", ".join(bad)
