"""kombu's filesystem transport (the embedded default's broker) with atomic message files.

kombu's ``Channel._put`` creates ``<ms>_<uuid>.<queue>.msg`` in the queue folder and only then
locks and writes it; a consumer polling the folder in between moves and reads an empty file and
the worker dies on ``JSONDecodeError`` (seen in our test runs: the worker's "Unrecoverable
error"). Here the message is written whole under a name the consumer ignores (``.tmp`` after
``.msg``: kombu matches the part after the first dot exactly) and then renamed into place with
``os.replace``, which is atomic on one file system. Everything else is kombu's.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

#: The URL scheme that selects this transport (``filesystem://`` URLs are mapped to it).
SCHEME = "picfilter-filesystem"


class Channel(filesystem.Channel):
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        temporary = final + ".tmp"
        try:
            with open(temporary, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
            os.replace(temporary, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel


TRANSPORT_ALIASES.setdefault(SCHEME, f"{__name__}:Transport")


def broker_url(url: str) -> str:
    """``url`` with a ``filesystem://`` scheme mapped to this transport; others unchanged."""
    if url.startswith("filesystem://"):
        return SCHEME + url[len("filesystem") :]
    return url
