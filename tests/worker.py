"""The test worker: ``picfilter worker`` with the test-only task of :mod:`tests.selftest_job`.

``python -m tests.worker worker --queues ml,io --pool solo`` (see ``WorkerProcess`` in
``tests/conftest.py``).
"""

from __future__ import annotations

import tests.selftest_job  # noqa: F401  (registers tests.selftest on the Celery app)
from app.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
