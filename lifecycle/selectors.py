"""Reads that are more than one ``.get()``. Every one is scoped by project: another project's id is
simply not found."""

from __future__ import annotations

from datetime import date, datetime

from django.db.models import QuerySet, Sum

from lifecycle.models import Lifecycle, Project, TimelineEvent, UsageDaily


def lifecycle_get(*, project: Project, lifecycle_id, user_id: str | None = None) -> Lifecycle | None:
    """The project's lifecycle; with ``user_id``, only if it is that subscriber's."""
    qs = Lifecycle.objects.filter(project=project, id=lifecycle_id)
    if user_id is not None:
        qs = qs.filter(subscriber__user_id=user_id)
    return qs.first()


def lifecycle_list(
    *,
    project: Project,
    status: str | None = None,
    metadata: dict[str, str] | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    user_id: str | None = None,
) -> QuerySet[Lifecycle]:
    qs = Lifecycle.objects.filter(project=project)
    if user_id is not None:
        qs = qs.filter(subscriber__user_id=user_id)
    if status:
        qs = qs.filter(status=status)
    for key, value in (metadata or {}).items():
        qs = qs.filter(**{f"metadata__{key}": value})
    if created_after:
        qs = qs.filter(created_at__gte=created_after)
    if created_before:
        qs = qs.filter(created_at__lt=created_before)
    return qs


def timeline(*, lifecycle: Lifecycle, after_seq: int = 0) -> QuerySet[TimelineEvent]:
    return TimelineEvent.objects.filter(lifecycle=lifecycle, seq__gt=after_seq).order_by("seq")


def usage_by_day(*, project: Project, since: date, until: date) -> list[dict]:
    """The project's usage per day and model, from ``since`` to ``until`` (inclusive, UTC days): ``day``,
    ``model``, ``requests``, ``input_tokens``, ``output_tokens`` and ``cost_usd`` (the shards summed)."""
    rows = UsageDaily.objects.filter(project=project, day__gte=since, day__lte=until).values("day", "model")
    totals = {name: Sum(name) for name in ("requests", "input_tokens", "output_tokens", "cost_usd")}
    return list(rows.annotate(**totals).order_by("day", "model"))
