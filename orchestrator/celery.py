"""The Celery app: webhook delivery attempts and the periodic sweeps (reconciler, retention)."""

import os

from celery import Celery
from celery.signals import task_postrun, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator.settings")

app = Celery("orchestrator")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect
@task_postrun.connect
def _close_old_connections(**kwargs) -> None:
    """Around each task, what Django does around each request: keep the connection for ``CONN_MAX_AGE``,
    and drop it if it broke (``CONN_HEALTH_CHECKS``). See ``CELERY_DB_REUSE_MAX`` in the settings."""
    from django.db import close_old_connections

    close_old_connections()
