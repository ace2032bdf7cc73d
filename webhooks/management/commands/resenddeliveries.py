from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_datetime

from webhooks.models import Delivery, DeliveryStatus
from webhooks.services import delivery_resend


class Command(BaseCommand):
    help = "Send failed webhook deliveries again (same webhook-id, a fresh retry series), e.g. after an outage."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--status", choices=[DeliveryStatus.EXHAUSTED, DeliveryStatus.ABORTED], nargs="+",
                            default=[DeliveryStatus.EXHAUSTED])  # fmt: skip
        parser.add_argument("--endpoint", help="only deliveries to this endpoint id")
        parser.add_argument("--since", help="created at or after (ISO 8601)")
        parser.add_argument("--dry-run", action="store_true")

    def handle(self, *args, status, endpoint, since, dry_run, **options) -> str:
        deliveries = Delivery.objects.filter(status__in=status)
        if endpoint:
            deliveries = deliveries.filter(endpoint_id=endpoint)
        if since:
            start = parse_datetime(since)
            if start is None:
                raise CommandError(f"not an ISO 8601 date-time: {since}")
            deliveries = deliveries.filter(created_at__gte=start)
        chosen = list(deliveries.order_by("created_at"))
        if not dry_run:
            for delivery in chosen:
                delivery_resend(delivery=delivery)
        return f"{'would resend' if dry_run else 'resent'} {len(chosen)} deliveries"
