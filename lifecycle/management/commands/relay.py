from __future__ import annotations

import logging
import time

from django.core.management.base import BaseCommand
from django.db import close_old_connections

from lifecycle import kafka
from lifecycle.relay import Relay, control_connection, prune_published, try_become_leader, wait_for_notify
from orchestrator.process import GracefulExit

log = logging.getLogger("lifecycle.relay")

IDLE_POLL_S = 1.0
PRUNE_EVERY_S = 300


class Command(BaseCommand):
    help = "Publish committed outbox rows to Kafka (the outbox relay process)."

    def handle(self, *args, **options) -> str:
        stop = GracefulExit()
        kafka.ensure_topics()
        control = control_connection()
        while not try_become_leader(control):
            # Another relay is publishing; stand by so ordering per lifecycle holds.
            if stop.wait(2.0):
                return "relay: stopped while standing by"
        log.info("relay: leader, publishing")
        relay = Relay.create()
        published, last_prune = 0, time.monotonic()
        while not stop.requested:
            try:
                sent = relay.publish_pending()
            except Exception:
                log.exception("relay: publish failed; retrying")
                close_old_connections()
                kafka.ensure_topics()  # a broker that restarted empty has lost its topics too
                stop.wait(1.0)
                continue
            published += sent
            if sent == 0:
                wait_for_notify(control, IDLE_POLL_S)
            if time.monotonic() - last_prune > PRUNE_EVERY_S:
                prune_published()
                last_prune = time.monotonic()
        relay.producer.flush(10)
        control.close()
        return f"relay: published {published} messages"
