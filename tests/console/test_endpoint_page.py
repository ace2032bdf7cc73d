"""A webhook endpoint's console page: its health at a glance, its recent attempts, and the safe actions
(recover, enable, resend), which need change permission."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse
from django.utils import timezone

from tests.conftest import make_project
from tests.console.factories import rich_lifecycle
from webhooks.models import Delivery, DeliveryStatus, WebhookEndpoint

pytestmark = pytest.mark.django_db


def page_url(endpoint) -> str:
    return reverse("admin:webhooks_webhookendpoint_change", args=[endpoint.id])


def test_the_endpoint_page_shows_health_recent_attempts_and_why_it_is_disabled(admin_client):
    project, _ = make_project()
    lifecycle = rich_lifecycle(project)  # three attempts: two 500s, then 200
    endpoint = WebhookEndpoint.objects.get(project=project)
    endpoint.enabled, endpoint.disabled_reason = False, "failing for 5 days"
    endpoint.disabled_at = timezone.now()
    endpoint.save()

    page = admin_client.get(page_url(endpoint)).content.decode()

    assert "33.3%" in page  # one of three attempts succeeded in the last day
    assert "failing for 5 days" in page and "Enable" in page
    assert page.count('<tr class="bad">') == 2 and page.count('<tr class="ok">') == 1
    assert reverse("admin:lifecycle_lifecycle_change", args=[lifecycle.id]) in page


def test_recover_enable_and_resend_from_the_endpoint_page(admin_client):
    project, _ = make_project()
    rich_lifecycle(project)
    endpoint = WebhookEndpoint.objects.get(project=project)
    delivery = Delivery.objects.get(endpoint=endpoint)
    Delivery.objects.filter(id=delivery.id).update(status=DeliveryStatus.EXHAUSTED)
    WebhookEndpoint.objects.filter(id=endpoint.id).update(enabled=False, disabled_reason="failing")

    refused = admin_client.post(page_url(endpoint) + "recover/", {"hours": "24"}, follow=True).content.decode()
    assert "Enable the endpoint first" in refused
    admin_client.post(page_url(endpoint) + "enable/")
    endpoint.refresh_from_db()
    assert endpoint.enabled and endpoint.disabled_reason == ""

    done = admin_client.post(page_url(endpoint) + "recover/", {"hours": "24"}, follow=True).content.decode()
    assert "Sending 1 failed delivery(ies) of the last 24 h again." in done
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.PENDING

    Delivery.objects.filter(id=delivery.id).update(status=DeliveryStatus.EXHAUSTED)
    admin_client.post(page_url(endpoint) + f"delivery/{delivery.id}/resend/")
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.PENDING


def test_actions_need_change_permission_not_view(client):
    project, _ = make_project()
    lifecycle = rich_lifecycle(project)
    endpoint = WebhookEndpoint.objects.get(project=project)
    viewer = User.objects.create_user("viewer", password="x", is_staff=True)
    viewer.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_lifecycle", "view_webhookendpoint", "view_delivery"])
    )
    client.force_login(viewer)
    lifecycle_page = reverse("admin:lifecycle_lifecycle_change", args=[lifecycle.id])

    assert client.get(page_url(endpoint)).status_code == 200  # they may look
    for action in (page_url(endpoint) + "enable/", page_url(endpoint) + "recover/", lifecycle_page + "cancel/",
                   lifecycle_page + "replay/"):  # fmt: skip
        assert client.post(action).status_code == 403, action
    listing = client.get(reverse("admin:lifecycle_lifecycle_changelist")).content.decode()
    assert "Cancel the selected" not in listing and "Replay the selected" not in listing


def test_the_endpoint_page_queries_the_same_however_many_attempts(admin_client, django_assert_max_num_queries):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    few, _ = make_project("few")
    many, _ = make_project("many")
    rich_lifecycle(few, attempts=1)
    rich_lifecycle(many, attempts=6, deliveries=4)
    with CaptureQueriesContext(connection) as queries:
        assert admin_client.get(page_url(WebhookEndpoint.objects.get(project=few))).status_code == 200
    with django_assert_max_num_queries(len(queries)):
        assert admin_client.get(page_url(WebhookEndpoint.objects.get(project=many))).status_code == 200
