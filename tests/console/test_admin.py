"""The operators' console (Django admin): lists, filters, search, the timeline page and its actions."""

from __future__ import annotations

import pytest
from django.urls import reverse

from lifecycle.models import Lifecycle
from tests.conftest import make_project
from tests.console.factories import rich_lifecycle
from tests.lifecycle.factories import lifecycle_with_lost_request
from webhooks.models import Delivery

pytestmark = pytest.mark.django_db

EVERY_EVENT = [
    "lifecycle.created",
    "lifecycle.generating",
    "generation.attempt",
    "lifecycle.delivering",
    "webhook.attempt",
    "lifecycle.awaiting_callback",
    "callback.received",
]


def change_url(lifecycle) -> str:
    return reverse("admin:lifecycle_lifecycle_change", args=[lifecycle.id])


def test_the_timeline_page_draws_every_step_with_attempts_and_errors(admin_client):
    project, _ = make_project()
    done = rich_lifecycle(project)
    failed = rich_lifecycle(project, fail=True)

    page = admin_client.get(change_url(done)).content.decode()
    for event in [*EVERY_EVENT, "lifecycle.completed"]:
        assert f'data-event="{event}"' in page, event
    assert "HTTP 429" in page and "HTTP 500" in page and "succeeded" in page
    assert "msg_" in page and "boom" in page  # deliveries with their attempts
    assert "A-1001" in page  # the metadata

    failed_page = admin_client.get(change_url(failed)).content.decode()
    assert 'data-event="lifecycle.failed"' in failed_page
    assert "backend_rejected" in failed_page and "Out of stock." in failed_page and "callback" in failed_page


def test_the_timeline_page_makes_the_same_number_of_queries_however_long_the_timeline(
    admin_client, django_assert_max_num_queries
):
    project, _ = make_project()
    small = rich_lifecycle(project, attempts=1, deliveries=1)
    large = rich_lifecycle(project, attempts=6, deliveries=4)
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as small_queries:
        assert admin_client.get(change_url(small)).status_code == 200
    with django_assert_max_num_queries(len(small_queries)):
        assert admin_client.get(change_url(large)).status_code == 200


def test_the_list_filters_by_status_error_code_project_and_model_and_searches_id_and_metadata(admin_client):
    project, _ = make_project("acme")
    other, _ = make_project("globex")
    done = rich_lifecycle(project)
    failed = rich_lifecycle(project, fail=True)
    pending = lifecycle_with_lost_request(other)
    url = reverse("admin:lifecycle_lifecycle_changelist")

    def listed(**params) -> set[str]:
        response = admin_client.get(url, params)
        assert response.status_code == 200
        return {str(lc.id) for lc in response.context["cl"].result_list}

    assert listed() == {str(done.id), str(failed.id), str(pending.id)}
    assert listed(status="failed") == {str(failed.id)}
    assert listed(error_code="backend_rejected") == {str(failed.id)}
    assert listed(project__id__exact=str(other.id)) == {str(pending.id)}
    assert listed(model="echo/test") == {str(pending.id)}
    assert listed(q=str(done.id)) == {str(done.id)}
    assert listed(q="A-1001") == {str(done.id), str(failed.id)}


def test_the_list_page_does_not_query_per_row(admin_client, django_assert_max_num_queries):
    project, _ = make_project()
    rich_lifecycle(project)
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    url = reverse("admin:lifecycle_lifecycle_changelist")
    with CaptureQueriesContext(connection) as one_row:
        admin_client.get(url)
    for _ in range(5):
        rich_lifecycle(project)
    with django_assert_max_num_queries(len(one_row)):
        admin_client.get(url)


def test_cancel_replay_and_resend_from_the_timeline_page(admin_client):
    project, _ = make_project()
    live = lifecycle_with_lost_request(project)
    done = rich_lifecycle(project)
    delivery = Delivery.objects.get(lifecycle=done)

    admin_client.post(change_url(live) + "cancel/")
    live.refresh_from_db()
    assert live.status == "cancelled"

    response = admin_client.post(change_url(done) + "replay/")
    replay = Lifecycle.objects.get(replay_of=done)
    assert response.url == change_url(replay)

    admin_client.post(change_url(done) + f"delivery/{delivery.id}/resend/")
    delivery.refresh_from_db()
    assert delivery.status == "pending"

    assert admin_client.get(change_url(done) + "replay/").status_code == 403  # actions are POST only


def test_list_actions_cancel_and_replay(admin_client):
    project, _ = make_project()
    live = lifecycle_with_lost_request(project)
    url = reverse("admin:lifecycle_lifecycle_changelist")

    admin_client.post(url, {"action": "replay", "_selected_action": [str(live.id)]})
    admin_client.post(url, {"action": "cancel", "_selected_action": [str(live.id)]})

    live.refresh_from_db()
    assert live.status == "cancelled"
    assert Lifecycle.objects.filter(replay_of=live).count() == 1


def test_the_console_requires_a_staff_login(client):
    project, _ = make_project()
    lifecycle = rich_lifecycle(project)

    response = client.get(change_url(lifecycle))

    assert response.status_code == 302
    assert "/admin/login/" in response.url


def test_ensureadmin_creates_then_resets_the_console_login(monkeypatch):
    from django.contrib.auth import authenticate
    from django.core.management import call_command
    from django.test import RequestFactory

    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "first password")
    call_command("ensureadmin")
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "second password")
    call_command("ensureadmin")

    request = RequestFactory().post("/admin/login/")  # the login's rate limit needs to know who asks
    assert authenticate(request, username="admin", password="first password") is None
    user = authenticate(request, username="admin", password="second password")
    assert user is not None and user.is_superuser and user.is_staff


def test_the_console_login_locks_out_after_five_failures(client):
    from django.contrib.auth.models import User

    User.objects.create_superuser("operator", "op@example.com", "correct horse battery")
    for _ in range(5):
        failed = client.post("/admin/login/", {"username": "operator", "password": "guess"})
        assert failed.status_code in (200, 429)  # the form again, with its error (the 5th locks)

    locked = client.post("/admin/login/", {"username": "operator", "password": "correct horse battery"})

    assert locked.status_code == 429
    assert not client.get("/admin/").wsgi_request.user.is_authenticated
