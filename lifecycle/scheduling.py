"""Which waiting generation goes next (shared/ARCHITECTURE.md, Flow control): fair across projects, and
within a project by the subscriber's tier, without starving any.

Both levels are stride scheduling (start-time fair queuing): each project, and each tier within a project,
has a *pass*; the next item comes from the one with the lowest pass, whose pass then grows by 1 / its
weight (one that starts waiting enters at the current pass plus 1 / its weight). Projects weigh the same,
so they take turns: one project's backlog of thousands waits behind another's single request for one
turn, not for its whole backlog. Tiers weigh ``GENERATION_TIER_WEIGHTS``
(enterprise 8, standard 4, free 2, none 1 by default): enterprise work goes first eight times as often as
work without a tier, and every tier keeps moving. One that was empty comes back at the current pass, not
with credit for the time it was idle, so a quiet project cannot save turns up and then flood.

Within a tier, items wait per model, so that a model on hold (at a provider's configured limit, or paused
by its 429) is passed over while the others go on; a project at its in-flight cap is passed over likewise.
Held items keep their place.

Pure and thread-safe: the generator puts what it consumes from Kafka and takes what it has room to run.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable, Collection, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)

NO_TIER = "none"


class _Stride(Generic[K]):
    """The keys with work, each with its pass; :meth:`next` is the key to serve."""

    def __init__(self) -> None:
        self.passes: dict[K, float] = {}
        self.clock = 0.0  # the pass of the key served last: where a key that comes back starts

    def activate(self, key: K, weight: float) -> None:
        if key not in self.passes:
            self.passes[key] = self.clock + 1.0 / weight  # its first turn, by its weight: heavier is sooner

    def next(self, among: Collection[K] | None = None) -> K | None:
        """The key to serve, of ``among`` if given (the keys that may be served now); ``None`` if none."""
        keys = self.passes if among is None else (key for key in self.passes if key in among)  # ties: oldest
        return min(keys, key=self.passes.__getitem__, default=None)

    def served(self, key: K, weight: float, still_active: bool) -> None:
        self.clock = self.passes[key]
        if still_active:
            self.passes[key] += 1.0 / weight
        else:
            del self.passes[key]


class _Project(Generic[T]):
    def __init__(self) -> None:
        # Tier → model → its items in arrival order, each with its sequence number (the oldest head goes
        # first among a tier's models; a model on hold is passed over without holding the others up).
        self.tiers: dict[str, dict[str, deque[tuple[int, T]]]] = {}
        self.stride: _Stride[str] = _Stride()
        self.size = 0

    def tiers_ready(self, held_models: Collection[str]) -> list[str]:
        return [tier for tier, models in self.tiers.items() if any(m not in held_models for m in models)]


class FairQueue(Generic[T]):
    def __init__(self, tier_weights: dict[str, float]) -> None:
        self.tier_weights = dict(tier_weights)
        self.tier_weights.setdefault(NO_TIER, 1.0)
        self._projects: dict[str, _Project[T]] = {}
        self._stride: _Stride[str] = _Stride()
        self._size = 0
        self._seq = itertools.count()
        self._front = itertools.count(-1, -1)  # what is put back goes before anything that waits
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._size

    def tier_of(self, tier: str | None) -> str:
        """The tier an item is queued under: an unknown or missing tier is queued as ``none``."""
        return tier if tier in self.tier_weights else NO_TIER

    def put(self, item: T, *, project: str, tier: str | None, model: str = "", front: bool = False) -> None:
        """Queue ``item`` behind what its project, tier and model have waiting; ``front``: before it (an
        item taken and then held back, put back in reverse order of taking, keeps its place)."""
        tier = self.tier_of(tier)
        with self._lock:
            queued = self._projects.setdefault(project, _Project())
            items = queued.tiers.setdefault(tier, {}).setdefault(model, deque())
            if front:
                items.appendleft((next(self._front), item))
            else:
                items.append((next(self._seq), item))
            queued.stride.activate(tier, self.tier_weights[tier])
            queued.size += 1
            self._stride.activate(project, 1.0)
            self._size += 1

    def take(
        self,
        n: int,
        *,
        held_projects: Collection[str] = frozenset(),
        held_models: Collection[str] = frozenset(),
        room: Callable[[str], int] | None = None,
    ) -> list[T]:
        """Up to ``n`` items, in the order they should start, passing over the projects and models on hold
        (at their in-flight cap, or waiting for a provider's limit): they keep their place. ``room``: how
        many more items a project may be given (this take gives it no more)."""
        taken: list[T] = []
        given: dict[str, int] = {}
        with self._lock:
            ready = None
            if held_projects or held_models or room is not None:
                ready = {
                    project
                    for project, queued in self._projects.items()
                    if project not in held_projects
                    and (room is None or room(project) > 0)
                    and queued.tiers_ready(held_models)
                }
            while len(taken) < n and self._size:
                project = self._stride.next(ready)
                if project is None:
                    break
                queued = self._projects[project]
                tier = queued.stride.next(queued.tiers_ready(held_models) if held_models else None)
                models = queued.tiers[tier]
                model = min((m for m in models if m not in held_models), key=lambda m: models[m][0][0])
                taken.append(models[model].popleft()[1])
                if not models[model]:
                    del models[model]
                queued.size -= 1
                self._size -= 1
                queued.stride.served(tier, self.tier_weights[tier], bool(models))
                if not models:
                    del queued.tiers[tier]
                self._stride.served(project, 1.0, queued.size > 0)
                if not queued.size:
                    del self._projects[project]
                given[project] = given.get(project, 0) + 1
                if ready is not None and (
                    not queued.size
                    or not queued.tiers_ready(held_models)
                    or (room is not None and given[project] >= room(project))
                ):
                    ready.discard(project)
        return taken

    def drop(self, unwanted: Callable[[T], bool]) -> list[T]:
        """Remove (and return) the items ``unwanted`` says, wherever they wait."""
        dropped: list[T] = []
        with self._lock:
            for project, queued in list(self._projects.items()):
                for tier, models in list(queued.tiers.items()):
                    for model, items in list(models.items()):
                        kept = deque(entry for entry in items if not unwanted(entry[1]))
                        dropped.extend(entry[1] for entry in items if unwanted(entry[1]))
                        queued.size -= len(items) - len(kept)
                        self._size -= len(items) - len(kept)
                        if kept:
                            models[model] = kept
                        else:
                            del models[model]
                    if not models:
                        del queued.tiers[tier]
                        del queued.stride.passes[tier]
                if not queued.size:
                    del self._projects[project]
                    del self._stride.passes[project]
        return dropped

    def items(self) -> list[T]:
        """Every item waiting, in no particular order."""
        with self._lock:
            return [
                entry[1]
                for queued in self._projects.values()
                for models in queued.tiers.values()
                for items in models.values()
                for entry in items
            ]

    def waiting(self) -> dict[tuple[str, str], int]:
        """How many items wait, per project and tier."""
        with self._lock:
            return {
                (project, tier): sum(len(items) for items in models.values())
                for project, queued in self._projects.items()
                for tier, models in queued.tiers.items()
            }


def tier_weights(spec: list[str]) -> dict[str, float]:
    """``["enterprise=8", "standard=4", ...]`` (GENERATION_TIER_WEIGHTS) as a mapping."""
    weights = {}
    for entry in spec:
        name, _, weight = entry.partition("=")
        weights[name.strip()] = float(weight)
        if weights[name.strip()] <= 0:
            raise ValueError(f"GENERATION_TIER_WEIGHTS: {entry!r} must weigh more than 0")
    return weights
