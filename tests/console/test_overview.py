"""The console's overview page (console/overview.py): the window's figures, each linking to the lifecycles
behind it, in a bounded number of queries however much there is."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse

from tests.conftest import make_project
from tests.console.factories import rich_lifecycle

pytestmark = pytest.mark.django_db

OVERVIEW = "/admin/overview/"


def test_the_overview_shows_outcomes_steps_failures_endpoints_and_waiting_work_with_links(admin_client):
    project, _ = make_project()
    done = rich_lifecycle(project)
    failed = rich_lifecycle(project, fail=True)

    page = admin_client.get(OVERVIEW).content.decode()

    assert "Lifecycles per 1 min by outcome · 2 in the window" in page
    assert re.search(r"status__exact=completed[^\"]*\"><rect", page)  # a bar links to its lifecycles
    steps = dict(re.findall(r'<tr data-step="([^"]+)">(.*?)</tr>', page, re.S))
    assert set(steps) == {"queued", "generating", "webhook", "waiting for the callback", "end to end"}
    slowest = re.search(r'href="(/admin/lifecycle/lifecycle/[^"]+/change/)"', steps["end to end"]).group(1)
    assert slowest in {reverse("admin:lifecycle_lifecycle_change", args=[lc.id]) for lc in (done, failed)}
    assert "backend_rejected" in page and "error_code=backend_rejected" in page
    assert "https://backend.example/hooks" in page  # the failing endpoint (its 500s), linked to its page
    assert "lifecycles pending" in page


def test_the_overview_queries_the_same_however_many_lifecycles(admin_client, django_assert_max_num_queries):
    project, _ = make_project()
    rich_lifecycle(project)
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as few:
        assert admin_client.get(OVERVIEW).status_code == 200
    for _ in range(5):
        rich_lifecycle(project, fail=True)
    with django_assert_max_num_queries(len(few)):
        assert admin_client.get(OVERVIEW, {"window": "24h"}).status_code == 200


def test_the_overview_needs_a_login_with_view_permission(client):
    assert client.get(OVERVIEW).status_code == 302  # to the login page
    staff = User.objects.create_user("viewer", password="x", is_staff=True)
    client.force_login(staff)
    assert client.get(OVERVIEW).status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="view_lifecycle"))
    assert client.get(OVERVIEW).status_code == 200
