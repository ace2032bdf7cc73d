"""What a stream opens with is one query (realtime/messages.py): the lifecycle, its events after ``since``,
and whether the key that minted the token was revoked."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from lifecycle import selectors
from lifecycle.services import api_key_create, api_key_revoke, lifecycle_create, record_event, transition
from lifecycle.states import Status
from realtime.messages import opening
from tests.conftest import make_project
from tests.lifecycle.factories import lifecycle_request

pytestmark = pytest.mark.django_db


def test_a_stream_opens_with_one_query_holding_the_lifecycle_and_its_events_after_since():
    project, _ = make_project()
    key, _ = api_key_create(project=project)
    lifecycle, _ = lifecycle_create(project=project, request=lifecycle_request())
    transition(lifecycle_id=lifecycle.id, to=Status.GENERATING)
    record_event(lifecycle_id=lifecycle.id, event="generation.attempt", payload={"attempt": 1, "outcome": "ok"})
    expected = [
        {"seq": e.seq, "event": e.event, "at": e.at.isoformat(), "data": e.payload}
        for e in selectors.timeline(lifecycle=lifecycle)
    ]
    assert len(expected) == 3

    with CaptureQueriesContext(connection) as queries:
        opened, events = opening(str(lifecycle.id), 0, key.pk)
    assert len(queries) == 1
    assert opened.id == lifecycle.id and not opened.key_revoked
    assert events == expected

    _, after_first = opening(str(lifecycle.id), 1, key.pk)
    assert after_first == expected[1:]
    assert opening(str(lifecycle.id), 3, None)[1] == []

    api_key_revoke(key=key)
    opened, events = opening(str(lifecycle.id), 0, key.pk)
    assert opened.key_revoked and events == []
    assert opening("not-a-uuid", 0)[0] is None
