"""Fair scheduling in the generator (lifecycle/scheduling.py): with every slot taken by one project's backlog,
another project's requests, and a project's higher tiers, take the next free slots instead of waiting behind
it. A generator with 4 slots and a 1 s model makes the backlog 10 s long."""

from __future__ import annotations

from datetime import datetime

import pytest

from tests.conftest import api_client, make_project
from tests.lifecycle.helpers import create, wait_status

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]

SLOTS = 4


@pytest.fixture
def narrow_generator(stack):
    """The stack's generator with 4 generations at a time, for this test only."""
    stack.stop("generator")
    stack.env["GENERATOR_CONCURRENCY"] = str(SLOTS)
    stack.start("generator")
    yield
    stack.stop("generator")
    del stack.env["GENERATOR_CONCURRENCY"]
    stack.start("generator")


def finished(api, lifecycles: list[dict]) -> list[datetime]:
    return [datetime.fromisoformat(wait_status(api, lc["id"], timeout=90)["finished_at"]) for lc in lifecycles]


def test_another_project_and_a_higher_tier_do_not_wait_behind_a_backlog(stack, api, narrow_generator):
    slow = {"model": "echo/x", "params": {"latency_ms": 1000}}
    free = {"user_id": "u", "tier": "free"}
    backlog = [create(api, slow | {"prompt": f"a{n}", "subscriber": free}) for n in range(40)]
    _, other_key = make_project("B")
    with api_client(stack, other_key) as other:
        theirs = [create(other, slow | {"prompt": f"b{n}"}) for n in range(3)]
        enterprise = [
            create(api, slow | {"prompt": f"e{n}", "subscriber": {"user_id": "v", "tier": "enterprise"}})
            for n in range(3)
        ]
        theirs_done = max(finished(other, theirs))
    enterprise_done = max(finished(api, enterprise))
    backlog_done = sorted(finished(api, backlog))

    # Alone in Kafka order, B's and the enterprise requests would finish after all 40 (~10 s); in turn, they
    # finish in the first rounds of free slots, while most of the backlog still waits.
    assert sum(done < theirs_done for done in backlog_done) < 20
    assert sum(done < enterprise_done for done in backlog_done) < 20
