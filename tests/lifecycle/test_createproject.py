from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command

from lifecycle.models import ApiKey, Project
from lifecycle.services import api_key_authenticate, api_key_revoke

pytestmark = pytest.mark.django_db


def test_createproject_prints_project_id_and_a_key_that_is_stored_only_hashed():
    out = io.StringIO()

    call_command("createproject", "Acme", stdout=out)

    printed = json.loads(out.getvalue())
    assert set(printed) == {"project_id", "api_key"}
    project = Project.objects.get(id=printed["project_id"])
    assert project.name == "Acme"
    key = ApiKey.objects.get(project=project)
    stored = [str(v) for v in ApiKey.objects.filter(pk=key.pk).values().get().values()]
    assert printed["api_key"] not in stored
    assert api_key_authenticate(raw_key=printed["api_key"]) == key


def test_a_revoked_or_altered_key_does_not_authenticate():
    out = io.StringIO()
    call_command("createproject", "Acme", stdout=out)
    raw_key = json.loads(out.getvalue())["api_key"]
    key = api_key_authenticate(raw_key=raw_key)

    assert api_key_authenticate(raw_key=raw_key[:-1] + ("A" if raw_key[-1] != "A" else "B")) is None
    api_key_revoke(key=key)
    assert api_key_authenticate(raw_key=raw_key) is None
