"""lifecycle/scheduling.py: the order in which waiting generations start."""

from __future__ import annotations

from collections import Counter

import pytest

from lifecycle.scheduling import FairQueue, tier_weights

WEIGHTS = {"enterprise": 8, "standard": 4, "free": 2}


def test_a_projects_backlog_does_not_make_another_wait_behind_it():
    queue: FairQueue[str] = FairQueue(WEIGHTS)
    for n in range(800):
        queue.put(f"a{n}", project="A", tier=None)
    for n in range(3):
        queue.put(f"b{n}", project="B", tier=None)

    first = queue.take(6)

    assert sorted(first) == ["a0", "a1", "a2", "b0", "b1", "b2"]  # B's three interleaved with A's
    assert len(queue) == 797


def test_a_project_that_comes_back_gets_no_credit_for_its_quiet_time():
    queue: FairQueue[str] = FairQueue(WEIGHTS)
    for n in range(100):
        queue.put(f"a{n}", project="A", tier=None)
    queue.take(50)  # A alone for a while
    for n in range(100):
        queue.put(f"b{n}", project="B", tier=None)

    order = queue.take(20)

    assert Counter(item[0] for item in order) == {"a": 10, "b": 10}  # turns from now on, not 50 for B


def test_within_a_project_tiers_go_by_weight_and_none_starves():
    queue: FairQueue[str] = FairQueue(WEIGHTS)
    for tier in ("free", "standard", "enterprise", None, "platinum"):  # platinum: unknown, queued as none
        for n in range(100):
            queue.put(f"{tier}-{n}", project="A", tier=tier)

    order = queue.take(150)
    counts = Counter(item.split("-")[0] for item in order)

    assert order[0].startswith("enterprise")
    assert counts["enterprise"] > counts["standard"] > counts["free"] > 0
    assert counts["None"] + counts["platinum"] > 0  # the lowest tier still moves
    assert counts["enterprise"] == pytest.approx(2 * counts["standard"], abs=2)


def test_dropping_items_keeps_the_rest_in_order():
    queue: FairQueue[tuple[int, str]] = FairQueue(WEIGHTS)
    for n in range(10):
        queue.put((n % 2, f"x{n}"), project="A" if n < 5 else "B", tier="free")

    dropped = queue.drop(lambda item: item[0] == 1)

    assert len(dropped) == 5 and len(queue) == 5
    assert [name for _, name in queue.take(10)] == ["x0", "x6", "x2", "x8", "x4"]
    assert queue.take(1) == [] and queue.waiting() == {}


def test_tier_weights_are_read_from_the_setting():
    assert tier_weights(["enterprise=8", " standard = 4", "free=2"]) == {"enterprise": 8, "standard": 4, "free": 2}
    with pytest.raises(ValueError):
        tier_weights(["free=0"])


def test_a_model_on_hold_is_passed_over_and_its_items_keep_their_place():
    queue: FairQueue[str] = FairQueue(WEIGHTS)
    for n in range(4):
        queue.put(f"limited{n}", project="A", tier=None, model="m/limited")
        queue.put(f"free{n}", project="A", tier=None, model="m/free")

    assert queue.take(2) == ["limited0", "free0"]  # arrival order across models
    assert queue.take(10, held_models={"m/limited"}) == ["free1", "free2", "free3"]
    taken = queue.take(2)
    assert taken == ["limited1", "limited2"]
    for item in reversed(taken):  # held back after all: put back in reverse order of taking
        queue.put(item, project="A", tier=None, model="m/limited", front=True)

    assert queue.take(10) == ["limited1", "limited2", "limited3"]


def test_a_project_on_hold_does_not_hold_up_another():
    queue: FairQueue[str] = FairQueue(WEIGHTS)
    for n in range(3):
        queue.put(f"a{n}", project="A", tier=None)
        queue.put(f"b{n}", project="B", tier=None)

    assert queue.take(10, held_projects={"A"}) == ["b0", "b1", "b2"]
    assert queue.take(10) == ["a0", "a1", "a2"]


def test_a_take_gives_no_project_more_than_its_room():
    queue: FairQueue[str] = FairQueue(WEIGHTS)
    for n in range(10):
        queue.put(f"a{n}", project="A", tier=None)
    queue.put("b0", project="B", tier=None)

    assert queue.take(10, room={"A": 3, "B": 5}.__getitem__) == ["a0", "b0", "a1", "a2"]
    assert queue.take(10, room={"A": 0, "B": 5}.__getitem__) == []
