"""Celery app and tasks (thin: they call services and ``app.ml``)."""
