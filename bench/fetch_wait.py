"""The embedded broker's Kafka hop against the consumer's ``fetch.wait.max.ms``: how long a message takes from
its produce (flushed at once) to the consumer's poll, and what the broker burns while a consumer waits with
nothing to read (one awake consumer fetching again and again). The figures behind
``EMBEDDED_FETCH_WAIT_MAX_MS``.

    python -m bench.fetch_wait [10 20 30 40 60] [--messages 120]

Each wait gets a fresh embedded broker (only the broker) and a topic of ``KAFKA_TOPIC_PARTITIONS``'s default
6 partitions, as the stack's requests topic has. Messages go one at a time at random intervals (so they
land anywhere within a fetch's wait). Prints one JSON line per wait: the hop's p50 and max in ms, and the
broker's cores busy while the consumer fetched with nothing to read.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import time
from pathlib import Path

import psutil
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from bench.cpu import process_seconds
from orchestrator.embedded import PROJECT_DIR, EmbeddedStack, running

STATE_DIR = PROJECT_DIR / ".state" / "bench-fetch-wait"
TOPIC = "fetch-wait"
PARTITIONS = 6
IDLE_S = 6.0


def measure(wait_ms: int, messages: int) -> dict:
    shutil.rmtree(STATE_DIR, ignore_errors=True)
    with running(EmbeddedStack.on_free_ports(Path(STATE_DIR), postgres=False, redis=False, ephemeral=True)) as servers:
        bootstrap = servers.environ()["KAFKA_BOOTSTRAP_SERVERS"]
        admin = AdminClient({"bootstrap.servers": bootstrap})  # held: its futures fail once it is collected
        for future in admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)]).values():
            future.result()
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "fetch-wait",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "session.timeout.ms": 6000,  # the broker's first join takes ~23 s otherwise (docs/embedded.md)
                "fetch.wait.max.ms": wait_ms,
            }
        )
        consumer.subscribe([TOPIC])
        deadline = time.monotonic() + 60
        while not consumer.assignment() and time.monotonic() < deadline:
            consumer.poll(0.1)
        producer.produce(TOPIC, value=b"warm-up")
        producer.flush()
        if _next(consumer, 30.0) is None:
            raise SystemExit("the warm-up message did not arrive within 30 s")

        hops, pause = [], random.Random(wait_ms)
        for i in range(messages):
            time.sleep(pause.uniform(0.1, 0.3))  # random: anywhere within a fetch's wait, whatever its length
            sent = time.monotonic()
            producer.produce(TOPIC, key=str(i).encode(), value=b"x")
            producer.flush()
            if _next(consumer, 5.0) is None:
                raise SystemExit(f"message {i} did not arrive within 5 s")
            hops.append(1000 * (time.monotonic() - sent))

        broker = psutil.Process(servers.server("kafka").process.pid)
        before, until = process_seconds(broker), time.monotonic() + IDLE_S
        while time.monotonic() < until:
            consumer.poll(0.1)
        idle_cores = (process_seconds(broker) - before) / IDLE_S
        consumer.close()
    shutil.rmtree(STATE_DIR, ignore_errors=True)
    return {
        "fetch_wait_max_ms": wait_ms,
        "hop_p50_ms": round(statistics.median(hops), 1),
        "hop_max_ms": round(max(hops), 1),
        "broker_cores_while_waiting": round(idle_cores, 3),
    }


def _next(consumer: Consumer, timeout: float):
    message = consumer.poll(timeout)
    while message is not None and message.error():
        message = consumer.poll(timeout)
    return message


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("waits", type=int, nargs="*", default=[10, 20, 30, 40, 60])
    parser.add_argument("--messages", type=int, default=120)
    args = parser.parse_args()
    for wait_ms in args.waits:
        print(json.dumps(measure(wait_ms, args.messages)), flush=True)


if __name__ == "__main__":
    main()
