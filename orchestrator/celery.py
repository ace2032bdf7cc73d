"""The Celery app: the periodic sweeps (reconciler, callback deadlines, stranded deliveries, retention).

Webhook attempts are not Celery tasks: the delivery process (:mod:`webhooks.worker`) claims them from the
database in batches. Celery keeps what it is good at here, running each sweep on its beat, once."""

import logging
import os

from celery import Celery, Task
from celery.beat import PersistentScheduler
from celery.signals import task_postrun, task_prerun
from celery.worker.consumer import Consumer
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator.settings")

log = logging.getLogger("orchestrator.celery")


class RidesOutOutages(Task):
    """A task that meets a server away (PostgreSQL restarting, Redis failing over) is not a failure to
    log with a traceback each time: the outage is logged once, and the sweep simply runs again at its next
    beat."""

    _outage = None

    def __call__(self, *args, **kwargs):
        from orchestrator.outages import Outage, transient

        if RidesOutOutages._outage is None:
            RidesOutOutages._outage = Outage("worker: a server", log)
        try:
            result = super().__call__(*args, **kwargs)
        except Exception as exc:
            if not transient(exc) or self.request.called_directly:
                raise
            RidesOutOutages._outage.failed(exc)
            return None
        RidesOutOutages._outage.ok()
        return result


app = Celery("orchestrator", task_cls=RidesOutOutages)
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


class Scheduler(PersistentScheduler):
    """Beat's scheduler, logging a broker outage once (and its end) instead of a stack trace for every task
    it could not send meanwhile; the next beat of each sweep sends it again."""

    _outage = None

    def apply_entry(self, entry, producer=None):
        from orchestrator.outages import Outage, transient

        if Scheduler._outage is None:
            Scheduler._outage = Outage("beat: the broker (Redis)", log)
        try:
            self.apply_async(entry, producer=producer, advance=False)
        except Exception as exc:
            cause = exc.__context__ or exc
            if transient(cause) or isinstance(cause, kombu_errors()):
                Scheduler._outage.failed(cause)
            else:
                log.exception("beat: could not send %s", entry.name)
            return
        Scheduler._outage.ok()


class WorkerConsumer(Consumer):
    """The worker's consumer, surviving what celery 5.7 does on a lost Redis connection: it closes the broken
    connection before reconnecting, kombu's Redis channel then restores unacknowledged messages through a
    connection whose details are already gone, and the ``AttributeError`` that raises (not a connection
    error, so not ignored) stopped the worker ("Unrecoverable error"). The close is best-effort anyway: the
    reconnect that follows builds everything anew, and the unacknowledged messages come back by visibility
    timeout."""

    def on_connection_error_after_connected(self, exc):
        try:
            super().on_connection_error_after_connected(exc)
        except AttributeError as error:
            log.warning("worker: closing the lost broker connection failed (%r); reconnecting anyway", error)


class _QoS(kombu_redis.QoS):
    """Acknowledging a message whose connection was lost (Redis restarted while its task ran, with
    ``acks_late``) raised an ``AttributeError`` from kombu's Redis channel, whose connection details are gone,
    and that stopped the worker ("Unrecoverable error"). There is nothing left to acknowledge on a dead
    connection: the message's bookkeeping is dropped here, and Redis, if it kept the message, gives it back
    after its visibility timeout, which the delivery's claim makes harmless (a repeat is a no-op)."""

    def ack(self, delivery_tag):
        try:
            super().ack(delivery_tag)
        except AttributeError:
            self._lost(delivery_tag)

    def reject(self, delivery_tag, requeue=False):
        try:
            super().reject(delivery_tag, requeue=requeue)
        except AttributeError:
            self._lost(delivery_tag)

    def _lost(self, delivery_tag) -> None:
        log.warning("worker: the broker connection of a finished task is gone; not acknowledging it there")
        virtual.QoS.ack(self, delivery_tag)


class _Channel(kombu_redis.Channel):
    QoS = _QoS


class RedisTransport(kombu_redis.Transport):
    """kombu's Redis transport (``CELERY_BROKER_TRANSPORT``), riding out a Redis restart under a running task."""

    Channel = _Channel


def kombu_errors() -> tuple[type[BaseException], ...]:
    from kombu.exceptions import OperationalError as KombuOperationalError

    return (KombuOperationalError,)


@task_prerun.connect
@task_postrun.connect
def _close_old_connections(**kwargs) -> None:
    """Around each task, what Django does around each request: keep the connection for ``CONN_MAX_AGE``,
    and drop it if it broke (``CONN_HEALTH_CHECKS``). See ``CELERY_DB_REUSE_MAX`` in the settings."""
    from django.db import close_old_connections

    close_old_connections()
