"""docker/prometheus/alerts.yml: well formed, and every metric it names is one /metrics exports, so no alert
watches a series that does not exist (and stays silent for ever)."""

from __future__ import annotations

import re

import httpx
import pytest
import yaml

from orchestrator.embedded import PROJECT_DIR
from tests.lifecycle.helpers import create, wait_status
from tests.webhooks.helpers import endpoint

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]

ALERTS = PROJECT_DIR / "docker" / "prometheus" / "alerts.yml"
# PromQL's own words, and ``up``, which Prometheus records itself.
PROMQL = {"up", "min_over_time", "max", "sum", "rate", "deriv", "clamp_min", "histogram_quantile", "and", "or"}


def metric_names(expr: str) -> set[str]:
    expr = re.sub(r"\{[^}]*\}|\bby\s*\([^)]*\)|\[[^\]]*\]", " ", expr)  # selectors, groupings, ranges
    return set(re.findall(r"\b[a-z_][a-z0-9_]*\b", expr)) - PROMQL


def test_every_alert_watches_a_metric_the_service_exports(api, stack, customer_backend):
    endpoint(api, customer_backend, "data")  # a webhook attempt and a callback, so their series exist too
    wait_status(api, create(api, {"model": "echo/x", "prompt": "a sample of every metric"})["id"])
    exported = {
        line.split("{")[0].split(" ")[0]
        for line in httpx.get(f"{stack.base_url}/metrics").text.splitlines()
        if line and not line.startswith("#")
    }
    rules = [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]

    assert len({rule["alert"] for rule in rules}) == len(rules)
    for rule in rules:
        assert {"expr", "for", "labels", "annotations"} <= set(rule), rule["alert"]
        metrics = metric_names(rule["expr"])
        assert metrics or rule["expr"].startswith("up"), rule["alert"]
        assert metrics <= exported, (rule["alert"], metrics - exported)
