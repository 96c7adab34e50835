"""Object storage: one interface, two backends (S3/MinIO through boto3; a local directory).

(The storage feature completes this module: presigned URLs, HeadObject, streaming reads.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from app.config import Settings


class Storage(Protocol):
    def ping(self) -> bool: ...


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def ping(self) -> bool:
        return self.root.is_dir()


def make_storage(settings: Settings) -> Storage:
    return LocalStorage(settings.storage_dir)
