"""deploy/kubernetes: the base and the example overlay render with kustomize, every object validates
against the Kubernetes schemas, and the Deployments are the Procfile's processes as compose runs them."""

from __future__ import annotations

import shutil
import subprocess

import kubernetes_validate
import pytest
import yaml
from django.conf import settings

from orchestrator.embedded import PROJECT_DIR
from tests.processes import PROCFILE

KUBERNETES = PROJECT_DIR / "deploy" / "kubernetes"
KUBECTL = shutil.which("kubectl")
VERSION = "1.31.0"  # the oldest release the manifests are meant for; each API used is GA there
SERVERS = {"web": 8000, "realtime": 8001}


def render(path: str) -> list[dict]:
    if KUBECTL is None:
        pytest.skip("kubectl is not installed (its kustomize renders the manifests)")
    rendered = subprocess.run(
        [KUBECTL, "kustomize", str(KUBERNETES / path)], capture_output=True, text=True, check=True, timeout=60
    )
    return [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]


LOOPS = ("relay", "generator", "delivery")


@pytest.fixture(scope="module", params=["base", "overlays/example"])
def objects(request) -> list[dict]:
    return render(request.param)


def of_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def test_every_object_validates_against_the_kubernetes_schemas(objects):
    for obj in objects:
        if obj["apiVersion"].startswith("keda.sh/"):
            continue  # a CRD: checked below
        kubernetes_validate.validate(obj, VERSION, strict=True)


def test_keda_scales_generators_on_kafka_lag_and_delivery_workers_on_due_deliveries():
    scaled = of_kind(render("overlays/example"), "ScaledObject")
    deployments = of_kind(render("overlays/example"), "Deployment")

    assert set(scaled) == {"generator", "delivery"}
    for obj in scaled.values():
        assert obj["spec"]["scaleTargetRef"]["name"] in deployments
        assert obj["spec"]["minReplicaCount"] >= 1
    kafka = scaled["generator"]["spec"]["triggers"][0]
    assert kafka["type"] == "kafka" and kafka["metadata"]["consumerGroup"] == "lifecycle-generators"
    assert kafka["metadata"]["topic"] == "lifecycle.requests"
    assert scaled["generator"]["spec"]["maxReplicaCount"] <= 12  # the topic's partitions in this config
    prometheus = scaled["delivery"]["spec"]["triggers"][0]
    assert prometheus["type"] == "prometheus" and "webhook_deliveries_due" in prometheus["metadata"]["query"]


def test_the_deployments_are_the_procfiles_processes_as_compose_runs_them(objects):
    deployments = of_kind(objects, "Deployment")
    compose = yaml.safe_load((PROJECT_DIR / "docker" / "compose.yaml").read_text())["services"]

    assert set(deployments) == set(PROCFILE)
    for name, deployment in deployments.items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["command"] == compose[name]["command"], name
        assert {"name": "PROCESS_NAME", "value": name} in container["env"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_servers_are_probed_and_routed_and_every_process_survives_a_drain(objects):
    deployments = of_kind(objects, "Deployment")
    budgets = {o["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] for o in objects
               if o["kind"] == "PodDisruptionBudget"}  # fmt: skip
    ingresses = of_kind(objects, "Ingress")

    for name, port in SERVERS.items():
        (container,) = deployments[name]["spec"]["template"]["spec"]["containers"]
        assert container["ports"] == [{"name": "http", "containerPort": port}]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for name in LOOPS:  # no HTTP: their work loops beat (orchestrator/liveness.py)
        (container,) = deployments[name]["spec"]["template"]["spec"]["containers"]
        assert container["livenessProbe"]["exec"]["command"] == ["python", "-m", "orchestrator.liveness", name, "60"]
    assert budgets == set(PROCFILE) - {"beat"}  # beat is a single scheduler
    routes = {
        path["path"]: path["backend"]["service"]["name"]
        for ingress in ingresses.values()
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    }
    assert routes["/ws/"] == "realtime" and routes["/v1/chat/completions$"] == "realtime"
    assert routes["/v1/lifecycles/[^/]+/events$"] == "realtime" and routes["/"] == "web"
    assert set(of_kind(objects, "HorizontalPodAutoscaler")) == {"web", "realtime"}
    assert "migrate" in of_kind(objects, "Job")


def test_shutdown_waits_for_the_longest_step_in_hand(objects):
    grace = {
        name: d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        for name, d in of_kind(objects, "Deployment").items()
    }

    assert grace["generator"] > settings.PROVIDER_TIMEOUT_S  # a provider attempt finishes, and its write
    assert grace["delivery"] > settings.WEBHOOK_TIMEOUT_S + settings.WEBHOOK_LEASE_GRACE_S
